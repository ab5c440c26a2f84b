// backbone.ts: the vision backbone of a checkpoint as a flat dict of timm ViT tensors, what the official
// extract_backbone_weights.py writes (docs/evaluation.md#backbone-export): the `visual.` (student) or `visual_ema.`
// (teacher) keys with the prefix stripped. The checkpoint is one of ours or an official `.pt`. safetensors by default
// (no unpickling to read it); `.pt`/`.pth` through libtorch's pickler, for tooling that expects torch.load.
import { CheckpointError, loadCheckpoint } from "./checkpoint.ts";
import { WriteError } from "../fs/write_error.ts";
import { isTorchCheckpoint, OfficialCheckpointError, openOfficialCheckpoint } from "./official_checkpoint.ts";
import { describeNonFinite, nonFiniteTensors } from "./finite.ts";
import { type Tensor, writeSafeTensors } from "../torch/mod.ts";
import { savePt } from "../torch/pt_file.ts";

/** The checkpoint's `model.visual.` (or `model.visual_ema.`) tensors with that prefix stripped, in file order. */
export function backboneTensors(tensors: Map<string, Tensor>, teacher: boolean): Map<string, Tensor> {
  const prefix = teacher ? "model.visual_ema." : "model.visual.";
  const out = new Map<string, Tensor>();
  for (const [key, tensor] of tensors) if (key.startsWith(prefix)) out.set(key.slice(prefix.length), tensor);
  return out;
}

/**
 * The checkpoint's tensors under our `model.<official key>` names: every tensor of one of our checkpoints, or the
 * chosen tower of an official `.pt` (only those are read).
 */
export function readCheckpointTensors(path: string, teacher: boolean): { tensors: Map<string, Tensor>; kind: string } {
  if (!isTorchCheckpoint(path)) {
    const loaded = loadCheckpoint(path);
    const kind = (loaded.meta.model_config as { kind?: string } | undefined)?.kind ?? "unknown";
    return { tensors: loaded.tensors, kind };
  }
  using official = openOfficialCheckpoint(path);
  const prefix = teacher ? "visual_ema." : "visual.";
  const tensors = new Map<string, Tensor>();
  try {
    for (const [key, ref] of official.weights) {
      if (key.startsWith(prefix)) tensors.set(`model.${key}`, official.file.tensor(ref).keep());
    }
    // Our checkpoints are scanned as they load (loadCheckpoint); the official tower is checked here.
    const bad = nonFiniteTensors(tensors);
    if (bad.length > 0) {
      throw new OfficialCheckpointError(path, `${describeNonFinite(bad, tensors.size)}; not exported`);
    }
  } catch (error) {
    for (const t of tensors.values()) t.dispose();
    throw error;
  }
  const model = official.args.get("model");
  return { tensors, kind: typeof model === "string" ? model : "official .pt" };
}

/** What exportBackbone wrote. */
export interface ExportedBackbone {
  /** How many tensors the backbone file holds. */
  tensors: number;
  /** The checkpoint's model kind (ours) or official model name. */
  kind: string;
}

/**
 * Writes the student (or, with `teacher`, the EMA) backbone of checkpoint `path` to `out` with timm key names:
 * safetensors, or a torch.save file when `out` ends in .pt or .pth. Throws CheckpointError, OfficialCheckpointError
 * or PtFileError for an unreadable input, CheckpointError (invalid-state) when it holds no such tower, and
 * WriteError naming `out` when the file cannot be written.
 */
export function exportBackbone(path: string, out: string, options: { teacher?: boolean } = {}): ExportedBackbone {
  const teacher = options.teacher ?? false;
  const { tensors, kind } = readCheckpointTensors(path, teacher);
  try {
    const backbone = backboneTensors(tensors, teacher);
    if (backbone.size === 0) {
      throw new CheckpointError(path, "invalid-state", `no ${teacher ? "visual_ema" : "visual"} tensors (${kind})`);
    }
    try {
      if (/\.(pt|pth)$/i.test(out)) savePt(out, backbone);
      else writeSafeTensors(out, backbone, { format: "pt", source: path, tower: teacher ? "visual_ema" : "visual" });
    } catch (error) {
      throw new WriteError(out, error);
    }
    return { tensors: backbone.size, kind };
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
