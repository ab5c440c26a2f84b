// viz.ts: `deno task viz tokens --checkpoint P --image FILE --out PNG [--mask-ratio R] [--device D]`: a picture of
// which patches a trained DetailCLIP's EMA teacher keeps for the student (input, teacher CLS attention, kept vs
// removed cells), computed with the training path's own functions (src/viz/teacher_tokens.ts). A plain CLIP
// checkpoint has no teacher and is refused: its student attention never selects tokens, so a map of it would show
// something training never does.
import { dirname } from "node:path";
import { EvalModelError, loadEvalModel } from "../src/eval/model.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import type { Device } from "../src/torch/mod.ts";
import { parseDevice, requireDevice } from "../src/torch/device.ts";
import { readEvalImage, teacherSelection, unnormalize } from "../src/viz/teacher_tokens.ts";
import { drawTokenMap } from "../src/viz/token_map.ts";
import { UsageError } from "./usage_error.ts";
import { parseFlags } from "./args.ts";
import { reportFailure } from "./errors.ts";
import { checkOutputFile } from "./output_paths.ts";
import { writeFileAtomic } from "../src/fs/atomic_write.ts";
import { outputOverInputProblem } from "../src/fs/same_file.ts";

const HELP = `usage: deno task viz tokens --checkpoint P --image FILE --out PNG [--mask-ratio R] [--device D]

  Draws which patches DetailCLIP's EMA teacher keeps for the student (docs/model.md#attention-guided-token-removal),
  three panels side by side:
    1. the input after the eval transform (Resize + CenterCrop to the model's image size)
    2. the teacher's CLS attention to each patch (mean over layers and heads), viridis over the image
    3. kept cells as they are, removed cells in dark grey, with the cell grid
  --checkpoint P    a DetailCLIP checkpoint written by 'deno task train' (CLIP checkpoints have no teacher)
  --image FILE      JPEG, PNG or WebP
  --out PNG         where to write the picture
  --mask-ratio R    the official --mask-ratio in [0, 1]: int(cells*R)+1 cells are kept (default: the checkpoint's)
  --device D        cpu | cuda | cuda:N (default cpu)`;

interface VizArgs {
  checkpoint: string;
  image: string;
  out: string;
  maskRatio?: number;
  device: Device;
}

function readVizArgs(rest: string[]): VizArgs {
  const flags = parseFlags(rest, {
    values: ["--checkpoint", "--image", "--out", "--mask-ratio", "--device"],
    help: HELP,
  });
  const values = flags.values;
  const missing = ["--checkpoint", "--image", "--out"].filter((flag) => !values.has(flag));
  if (missing.length > 0) throw new UsageError(`${missing.join(", ")} ${missing.length > 1 ? "are" : "is"} required`);
  let maskRatio: number | undefined;
  const rawRatio = values.get("--mask-ratio");
  if (rawRatio !== undefined) {
    maskRatio = Number(rawRatio);
    if (rawRatio.trim() === "" || !(maskRatio >= 0 && maskRatio <= 1)) {
      throw new UsageError(`--mask-ratio must be a number in [0, 1], got '${rawRatio}'`);
    }
  }
  const overInput = outputOverInputProblem("--out", values.get("--out")!, [
    { flag: "--checkpoint", path: values.get("--checkpoint")! },
    { flag: "--image", path: values.get("--image")! },
  ]);
  if (overInput !== null) throw new UsageError(overInput);
  const device = parseDevice(values.get("--device") ?? "cpu");
  requireDevice(device);
  return {
    checkpoint: values.get("--checkpoint")!,
    image: values.get("--image")!,
    out: values.get("--out")!,
    maskRatio,
    device,
  };
}

/** Draws the token map; returns the exit code (0: written; failures throw to the CLI boundary). */
function tokens(args: VizArgs): number {
  // A bad checkpoint (status 6) or image (status 5) is reported by runViz through cli/errors.ts, as one line.
  const loaded = loadEvalModel(args.checkpoint, { device: args.device });
  try {
    const model = loaded.model;
    if (!(model instanceof DetailCLIP)) {
      throw new EvalModelError(
        `${args.checkpoint} holds a plain CLIP model: it has no EMA teacher, whose CLS attention ` +
          "is what selects tokens; token maps need a DetailCLIP checkpoint",
      );
    }
    let selection, picture;
    {
      using images = readEvalImage(args.image, loaded.imageSize, args.device); // (1, 3, S, S)
      selection = teacherSelection(model, images, args.maskRatio);
      picture = unnormalize(images);
    }
    const { cells, keptCells, keptTokens, ratio } = selection;
    const tokens = selection.gridSize ** 2;
    const summary = `kept ${keptCells} of ${cells} cells (${keptTokens} of ${tokens} tokens), mask ratio ${ratio}`;
    const title = `step ${loaded.step}: ${summary}`;
    const { raster } = drawTokenMap({ ...selection, image: picture, title });
    Deno.mkdirSync(dirname(args.out), { recursive: true });
    writeFileAtomic(args.out, raster.toPng());
    console.log(`wrote ${args.out}: ${summary}, teacher at step ${loaded.step} (${raster.width}x${raster.height} px)`);
    return 0;
  } finally {
    loaded.dispose();
  }
}

export function runViz(args: string[]): number {
  const [what, ...rest] = args;
  if (what === undefined || what === "--help" || what === "-h" || rest.includes("--help") || rest.includes("-h")) {
    console.log(HELP);
    return what === undefined ? 2 : 0;
  }
  if (what !== "tokens") throw new UsageError(`unknown picture '${what}' (known: tokens)\n\n${HELP}`);
  const parsed = readVizArgs(rest);
  checkOutputFile(parsed.out, "--out"); // before the checkpoint is loaded
  try {
    return tokens(parsed);
  } catch (error) {
    return reportFailure("viz", error); // one line and the documented status (docs/errors.md)
  }
}

export function main(args: string[]): Promise<number> {
  return Promise.resolve(runViz(args));
}
