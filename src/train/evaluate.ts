// evaluate.ts: the built-in run's before/after evaluation on held-out synthetic images (the `val` split, never
// trained on): zero-shot shape classification with the prompt templates, and image↔text retrieval of the captions.
import type { TrainSource } from "../data/sources.ts";
import { syntheticBatch, syntheticClassNames, syntheticRetrievalSet, syntheticTemplates } from "../data/synthetic.ts";
import { retrievalRecall } from "../eval/retrieval.ts";
import { zeroShotClassifier, zeroShotMetrics } from "../eval/zeroshot.ts";
import type { AnyModel } from "../models/build.ts";
import { cat, type Device, noGrad, Tensor, tidy } from "../torch/mod.ts";

export interface SyntheticEval {
  zeroShotTop1: number;
  chance: number;
  retrievalR1: number;
  retrievalT2IR1: number;
  images: number;
}

/** Evaluates in eval mode (all patches, student towers) and restores the previous mode. */
export function evaluateSynthetic(
  model: AnyModel,
  source: TrainSource,
  options: { size: number; seed: number; device: Device; batchSize?: number },
): SyntheticEval {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() =>
      tidy(() => {
        const batchSize = options.batchSize ?? 100;
        const tokenize = (texts: string[]): Tensor => {
          const ids = source.tokenizer.tokenize(texts, source.contextLength);
          return options.device === "cpu" ? ids : ids.to({ device: options.device });
        };
        const imageEmbeds: Tensor[] = [];
        const labels: number[] = [];
        const captions: string[] = [];
        for (let start = 0; start < options.size; start += batchSize) {
          const indices = Array.from({ length: Math.min(batchSize, options.size - start) }, (_, i) => start + i);
          const batch = syntheticBatch("val", indices, {
            seed: options.seed,
            size: source.imageSize,
            views: 1,
            device: options.device,
          });
          imageEmbeds.push(model.encodeImage(batch.u));
          labels.push(...batch.labels);
          captions.push(...batch.captions);
        }
        const images = cat(imageEmbeds, 0); // (N, E)
        const classes = syntheticClassNames();
        const classifier = zeroShotClassifier(model, tokenize, classes, syntheticTemplates()); // (C, E)
        const logits = images.div(images.norm(2, -1, true)).matmul(classifier.transpose(0, 1)); // (N, C)
        const labelTensor = Tensor.fromArray(labels, [labels.length], { dtype: "int64", device: options.device });
        const zeroShot = zeroShotMetrics(logits, labelTensor);
        const retrieval = syntheticRetrievalSet(captions);
        const textEmbeds: Tensor[] = [];
        for (let start = 0; start < retrieval.texts.length; start += batchSize) {
          textEmbeds.push(model.encodeText(tokenize(retrieval.texts.slice(start, start + batchSize))));
        }
        const recall = retrievalRecall(images, cat(textEmbeds, 0), retrieval.textToImages, [1]);
        return {
          zeroShotTop1: zeroShot.top1,
          chance: 100 / classes.length,
          retrievalR1: recall.imageToText[1],
          retrievalT2IR1: recall.textToImage[1],
          images: options.size,
        };
      })
    );
  } finally {
    model.train(wasTraining);
  }
}
