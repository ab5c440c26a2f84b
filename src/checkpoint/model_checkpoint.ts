// model_checkpoint.ts: a model and its tokenizer saved as one of our checkpoints, in the layout the training loop
// writes and src/eval/model.ts reads back (`model.<official key>` tensors, meta.model_config, meta.tokenizer_merges),
// so weights built or changed in library code evaluate, embed and export like a trained run's.
import type { AnyModel } from "../models/build.ts";
import type { Tensor } from "../torch/mod.ts";
import { saveCheckpoint } from "./checkpoint.ts";

export interface SaveModelCheckpointOptions {
  /** The optimizer step the weights belong to; it names the file (default 0). */
  step?: number;
  /** Further JSON-serialisable entries for the checkpoint's meta. */
  meta?: Record<string, unknown>;
}

/**
 * Writes `<dir>/checkpoint-<step>.safetensors` holding `model`'s state dict, its config and the tokenizer's merges
 * (atomically, as saveCheckpoint does), and returns its path. Throws CheckpointError.
 */
export function saveModelCheckpoint(
  dir: string,
  model: AnyModel,
  tokenizer: { readonly merges: readonly string[] },
  options: SaveModelCheckpointOptions = {},
): string {
  const tensors = new Map<string, Tensor>();
  for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
  return saveCheckpoint(dir, {
    tensors,
    meta: {
      ...options.meta,
      step: options.step ?? 0,
      model_config: model.config,
      tokenizer_merges: [...tokenizer.merges],
    },
  });
}
