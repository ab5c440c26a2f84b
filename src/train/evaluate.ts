// evaluate.ts: the built-in run's before/after evaluation on held-out synthetic images (the `val` split, never
// trained on). Zero-shot classification of single-object images by colour and by shape, each class embedding the
// normalised mean over a few prompt templates (the captions never contain these prompts), and image↔text
// retrieval of the captions of ordinary (1–3 object) images.
//
// Colour is the headline zero-shot number: within minutes the tiny model learns colours and positions (they
// already tell the captions of a batch apart), while shapes come much more slowly (see README, "The built-in run").
import type { TrainSource } from "../data/sources.ts";
import { COLOURS, SHAPES, syntheticBatch, syntheticSample } from "../data/synthetic.ts";
import { groupEqualCaptions, retrievalRecall } from "../eval/retrieval.ts";
import { zeroShotClassifier, zeroShotMetrics } from "../eval/zeroshot.ts";
import type { AnyModel } from "../models/build.ts";
import { cat, type Device, F, noGrad, Tensor, tidy } from "../torch/mod.ts";

export interface SyntheticEval {
  /** Zero-shot colour classification top-1 (%), the headline number. */
  zeroShotTop1: number;
  chance: number;
  zeroShotShapeTop1: number;
  shapeChance: number;
  retrievalR1: number;
  retrievalT2IR1: number;
  images: number;
}

export const COLOUR_TEMPLATES = ["a {} shape.", "a {} object.", "something {}."];
export const SHAPE_TEMPLATES = ["a {}.", "a photo of a {}.", "a drawing of a {}.", "a {} shape."];

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
        const embedImages = (objects?: number): { images: Tensor; captions: string[] } => {
          const embeds: Tensor[] = [];
          const captions: string[] = [];
          for (let start = 0; start < options.size; start += batchSize) {
            const indices = Array.from({ length: Math.min(batchSize, options.size - start) }, (_, i) => start + i);
            const batch = syntheticBatch("val", indices, {
              seed: options.seed,
              size: source.imageSize,
              views: 1,
              device: options.device,
              objects,
            });
            embeds.push(model.encodeImage(batch.u));
            captions.push(...batch.captions);
          }
          return { images: F.normalize(cat(embeds, 0), { dim: -1 }), captions }; // images: (N, E)
        };
        const classify = (images: Tensor, classes: string[], templates: string[], labels: number[]): number => {
          const classifier = zeroShotClassifier(model, tokenize, classes, templates); // (C, E)
          const logits = images.matmul(classifier.transpose(0, 1)); // (N, C)
          const target = Tensor.fromArray(labels, [labels.length], { dtype: "int64", device: options.device });
          return zeroShotMetrics(logits, target).top1;
        };

        const single = embedImages(1);
        const attributes = Array.from(
          { length: options.size },
          (_, i) => syntheticSample("val", i, { seed: options.seed, size: 16, objects: 1 }).attributes[0],
        );
        const colourTop1 = classify(
          single.images,
          [...COLOURS],
          COLOUR_TEMPLATES,
          attributes.map((a) => COLOURS.indexOf(a.colour)),
        );
        const shapeTop1 = classify(
          single.images,
          [...SHAPES],
          SHAPE_TEMPLATES,
          attributes.map((a) => SHAPES.indexOf(a.shape)),
        );

        const { images, captions } = embedImages();
        const retrieval = groupEqualCaptions(captions);
        const textEmbeds: Tensor[] = [];
        for (let start = 0; start < retrieval.texts.length; start += batchSize) {
          textEmbeds.push(model.encodeText(tokenize(retrieval.texts.slice(start, start + batchSize))));
        }
        const recall = retrievalRecall(images, cat(textEmbeds, 0), retrieval.textToImages, [1]);
        return {
          zeroShotTop1: colourTop1,
          chance: 100 / COLOURS.length,
          zeroShotShapeTop1: shapeTop1,
          shapeChance: 100 / SHAPES.length,
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
