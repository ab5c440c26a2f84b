// export.ts: `deno task export backbone --checkpoint P [--teacher] --out X.safetensors`: the vision backbone of a
// training checkpoint as a flat dict of timm ViT tensors, what the official extract_backbone_weights.py writes
// (SPEC §7.3): the `visual.` (student) or `visual_ema.` (teacher, --teacher) keys with the prefix stripped, no
// image_projection, the frozen patch_embed included. safetensors rather than torch.save: every framework reads it
// without unpickling, and timm's load_state_dict accepts the dict as is.
import { CheckpointError, loadCheckpoint } from "../src/train/checkpoint.ts";
import { type Tensor, writeSafeTensors } from "../src/torch/mod.ts";
import { UsageError } from "./usage_error.ts";

const HELP = `usage: deno task export backbone --checkpoint P [--teacher] --out X.safetensors

  Writes the ViT backbone with timm key names (cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*).
  --teacher   export DetailCLIP's EMA tower (visual_ema) instead of the student (visual)`;

/** The checkpoint's `model.visual.` (or `model.visual_ema.`) tensors with that prefix stripped, in file order. */
export function backboneTensors(tensors: Map<string, Tensor>, teacher: boolean): Map<string, Tensor> {
  const prefix = teacher ? "model.visual_ema." : "model.visual.";
  const out = new Map<string, Tensor>();
  for (const [key, tensor] of tensors) if (key.startsWith(prefix)) out.set(key.slice(prefix.length), tensor);
  return out;
}

export function runExport(args: string[]): number {
  const [what, ...rest] = args;
  if (what === "--help" || what === "-h" || what === undefined) {
    console.log(HELP);
    return what === undefined ? 2 : 0;
  }
  if (what !== "backbone") throw new UsageError(`unknown export '${what}' (known: backbone)\n\n${HELP}`);
  let checkpoint: string | undefined, out: string | undefined, teacher = false;
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    if (flag === "--teacher") {
      teacher = true;
    } else if (flag === "--checkpoint" || flag === "--out") {
      const value = rest[++i];
      if (value === undefined) throw new UsageError(`${flag} needs a value`);
      if (flag === "--checkpoint") checkpoint = value;
      else out = value;
    } else {
      throw new UsageError(`unknown option '${flag}'`);
    }
  }
  if (checkpoint === undefined || out === undefined) throw new UsageError("--checkpoint and --out are required");
  let loaded;
  try {
    loaded = loadCheckpoint(checkpoint);
  } catch (error) {
    if (error instanceof CheckpointError) {
      console.error(`detailclip export: ${error.message}`);
      return 1;
    }
    throw error;
  }
  try {
    const backbone = backboneTensors(loaded.tensors, teacher);
    if (backbone.size === 0) {
      const kind = (loaded.meta.model_config as { kind?: string } | undefined)?.kind ?? "unknown";
      console.error(`detailclip export: ${checkpoint} has no ${teacher ? "visual_ema" : "visual"} tensors (${kind})`);
      return 1;
    }
    writeSafeTensors(out, backbone, { format: "pt", source: checkpoint, tower: teacher ? "visual_ema" : "visual" });
    console.log(`wrote ${out}: ${backbone.size} tensors (${teacher ? "teacher" : "student"} backbone)`);
    return 0;
  } finally {
    for (const t of loaded.tensors.values()) t.dispose();
  }
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runExport(args));
}
