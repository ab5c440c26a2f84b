// eval_checkpoint.ts: the checkpoint the evaluation tests run on: an untrained CLIP_tiny_synthetic saved the way the
// training loop saves it (`model.<key>` tensors plus meta.model_config and meta.tokenizer_merges, the merges learned
// from synthetic captions), so `deno task eval` can be exercised end to end without training first.
import { trainBpe } from "../src/data/bpe_trainer.ts";
import { syntheticSample } from "../src/data/synthetic.ts";
import { buildPreset } from "../src/models/build.ts";
import { saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import type { Tensor } from "../src/torch/mod.ts";

/** Writes the checkpoint into `dir` and returns its path. */
export function saveUntrainedCheckpoint(dir: string): string {
  const model = buildPreset("CLIP_tiny_synthetic");
  try {
    const captions = Array.from({ length: 64 }, (_, i) => syntheticSample("train", i, { size: 16 }).caption);
    const tensors = new Map<string, Tensor>();
    for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
    return saveCheckpoint(dir, {
      tensors,
      meta: { step: 0, model_config: model.config, tokenizer_merges: trainBpe(captions, 600) },
    });
  } finally {
    model.dispose();
  }
}
