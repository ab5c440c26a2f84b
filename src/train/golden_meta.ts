// golden_meta.ts: the schema of a golden reference folder's meta.json (tests/fixtures/golden/README.md): the model dims in
// `hyper`, the step's hyper-parameters and the reference losses, and the model built from the folder's weights.
// Shared by `deno task golden` and bench/train_step.
import { readRegularTextSync } from "../fs/input_file.ts";
import { z } from "zod";
import { configFromGoldenHyper } from "../models/configs.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import { loadSafeTensors, manualSeed } from "../torch/mod.ts";
import { isTorchCheckpoint, loadOfficialWeights, openOfficialCheckpoint } from "../checkpoint/official_checkpoint.ts";

export const GoldenMetaSchema = z.object({
  hyper: z.record(z.number()),
  momentum: z.number(),
  mask_ratio: z.number(),
  lr: z.number(),
  wd: z.number(),
  betas: z.tuple([z.number(), z.number()]),
  eps: z.number(),
  epoch: z.number().int(),
  teacher_temp_cls: z.number().optional(),
  teacher_temp_patch: z.number().optional(),
  student_temp: z.number().optional(),
  center_momentum: z.number().optional(),
  losses: z.object({ loss: z.number() }).passthrough(),
}).passthrough();

export type GoldenMeta = z.infer<typeof GoldenMetaSchema>;

/** Reads and validates DIR/meta.json; the error names the file and every bad field. */
export function readGoldenMeta(dir: string): GoldenMeta {
  const path = `${dir.replace(/\/$/, "")}/meta.json`;
  let raw: unknown;
  try {
    raw = JSON.parse(readRegularTextSync(path));
  } catch (error) {
    throw new Error(`cannot read ${path}: ${(error as Error).message}`);
  }
  const parsed = GoldenMetaSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`${path}: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  return parsed.data;
}

/**
 * The DetailCLIP of DIR/meta.json's dims with DIR/weights.safetensors loaded (strict), in training mode. `weights`
 * names another file with the same parameters instead: safetensors, or an official-format `.pt` checkpoint.
 */
export function buildGoldenModel(dir: string, meta: GoldenMeta, weights?: string): DetailCLIP {
  manualSeed(meta.hyper.seed ?? 0);
  const model = new DetailCLIP(configFromGoldenHyper(meta.hyper, meta.mask_ratio));
  const path = weights ?? `${dir.replace(/\/$/, "")}/weights.safetensors`;
  if (isTorchCheckpoint(path)) {
    try {
      using checkpoint = openOfficialCheckpoint(path);
      loadOfficialWeights(model, checkpoint, { modelName: "golden (meta.json hyper)" });
    } catch (error) {
      model.dispose();
      throw error;
    }
    return model.train();
  }
  return loadSafeTensorWeights(model, path);
}

function loadSafeTensorWeights(model: DetailCLIP, path: string): DetailCLIP {
  const weights = loadSafeTensors(path);
  try {
    model.loadStateDict(weights, { strict: true, where: path });
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  return model.train();
}
