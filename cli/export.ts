// export.ts: `deno task export backbone --checkpoint P [--teacher] --out X.safetensors|X.pt`: the vision backbone
// of a checkpoint as a flat dict of timm ViT tensors, what the official extract_backbone_weights.py writes
// (docs/evaluation.md#backbone-export): the `visual.` (student) or `visual_ema.` (teacher, --teacher) keys with the
// prefix stripped, no image_projection, the frozen patch_embed included. The checkpoint is one of ours or an official
// `.pt` (the extract_backbone_weights.py use case). safetensors by default: every framework reads it without
// unpickling; `.pt` is written by libtorch's pickler, so Python's torch.load (and timm/mmseg tooling that expects it)
// reads it.
import { exportBackbone } from "../src/checkpoint/backbone.ts";
import { outputOverInputProblem } from "../src/fs/same_file.ts";
import { parseFlags } from "./args.ts";
import { checkOutputFile } from "./output_paths.ts";
import { UsageError } from "./usage_error.ts";

const HELP = `usage: deno task export backbone --checkpoint P [--teacher] --out X.safetensors|X.pt

  Writes the ViT backbone with timm key names (cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*), as
  safetensors, or as a torch.save file when X ends in .pt or .pth (Python: torch.load(X) returns the dict).
  --checkpoint P   a checkpoint of deno task train, or an official DetailCLIP .pt (module. prefix or not)
  --teacher        export DetailCLIP's EMA tower (visual_ema) instead of the student (visual)`;

export function runExport(args: string[]): number {
  const [what, ...rest] = args;
  if (what === "--help" || what === "-h" || what === undefined) {
    console.log(HELP);
    return what === undefined ? 2 : 0;
  }
  if (what !== "backbone") throw new UsageError(`unknown export '${what}' (known: backbone)\n\n${HELP}`);
  const flags = parseFlags(rest, { values: ["--checkpoint", "--out"], booleans: ["--teacher"] });
  const checkpoint = flags.values.get("--checkpoint"), out = flags.values.get("--out");
  if (checkpoint === undefined || out === undefined) throw new UsageError("--checkpoint and --out are required");
  checkOutputFile(out, "--out"); // before the checkpoint is read
  const overInput = outputOverInputProblem("--out", out, [{ flag: "--checkpoint", path: checkpoint }]);
  if (overInput !== null) throw new UsageError(overInput);
  // An unreadable checkpoint (status 6) or a failed write (status 7) ends in cli/errors.ts with one line.
  const teacher = flags.booleans.has("--teacher");
  const exported = exportBackbone(checkpoint, out, { teacher });
  console.log(`wrote ${out}: ${exported.tensors} tensors (${teacher ? "teacher" : "student"} backbone)`);
  return 0;
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runExport(args));
}
