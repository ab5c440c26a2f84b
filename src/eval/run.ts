// run.ts: zero-shot classification and retrieval over an EvalDataset with an EvalModel: embed every image batch by
// batch (eval mode, no grad, fp32), then hand the embeddings to the metric functions of zeroshot.ts and retrieval.ts.
import { cat, type Device, F, noGrad, Tensor, tidy } from "../torch/mod.ts";
import { DatasetError, type EvalDataset } from "./datasets.ts";
import type { EvalModel } from "./model.ts";
import { retrievalRecall, type RetrievalResult } from "./retrieval.ts";
import { zeroShotClassifier, zeroShotMetrics, type ZeroShotResult } from "./zeroshot.ts";

export interface RunOptions {
  batchSize: number;
  device: Device;
}

/** Zero-shot labels and templates in the official labels.json / templates.json layout (dataset key → list). */
export interface ZeroShotPrompts {
  classNames: readonly (string | readonly string[])[];
  templates: readonly string[];
}

/** Reads `key` from an official labels.json and templates.json pair (SPEC §7.2); list-valued labels are synonyms. */
export function readZeroShotPrompts(labelsPath: string, templatesPath: string, key: string): ZeroShotPrompts {
  const read = (path: string): Record<string, unknown> => {
    const parsed: unknown = JSON.parse(Deno.readTextFileSync(path));
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new DatasetError(`${path}: expected a JSON object of dataset key → list`);
    }
    return parsed as Record<string, unknown>;
  };
  const labels = read(labelsPath)[key];
  const templates = read(templatesPath)[key];
  const isName = (x: unknown): boolean =>
    typeof x === "string" || (Array.isArray(x) && x.length > 0 && x.every((s) => typeof s === "string"));
  if (!Array.isArray(labels) || !labels.every(isName)) {
    throw new DatasetError(`${labelsPath}: '${key}' must be a list of class names (strings or lists of synonyms)`);
  }
  if (!Array.isArray(templates) || templates.length === 0 || !templates.every((t) => typeof t === "string")) {
    throw new DatasetError(`${templatesPath}: '${key}' must be a non-empty list of template strings`);
  }
  return { classNames: labels as (string | string[])[], templates: templates as string[] };
}

/** (N, E) L2-normalised image embeddings of the whole dataset, plus its labels and captions in order. */
export function embedDataset(
  model: EvalModel,
  dataset: EvalDataset,
  options: RunOptions,
): { images: Tensor; labels: number[]; captions: string[] } {
  const embeds: Tensor[] = [];
  const labels: number[] = [];
  const captions: string[] = [];
  try {
    for (const batch of dataset.batches(options.batchSize, options.device)) {
      embeds.push(noGrad(() => tidy(() => F.normalize(model.encodeImage(batch.images), { dim: -1 })).keep()));
      batch.images.dispose();
      if (batch.labels) labels.push(...batch.labels);
      if (batch.captions) captions.push(...batch.captions);
    }
    return { images: tidy(() => cat(embeds, 0)).keep(), labels, captions }; // images: (N, E)
  } finally {
    for (const e of embeds) e.dispose();
  }
}

/** Zero-shot top-1 / top-5 / mean-per-class (percent) of `dataset` with `prompts` (default: the dataset's own). */
export function runZeroShot(
  model: EvalModel,
  dataset: EvalDataset,
  options: RunOptions & { prompts?: ZeroShotPrompts },
): ZeroShotResult & { classes: number; templates: number } {
  const classNames = options.prompts?.classNames ?? dataset.classNames;
  const templates = options.prompts?.templates ?? dataset.templates;
  if (classNames === undefined || templates === undefined) {
    throw new DatasetError(`${dataset.name} has no class names or templates; pass --labels and --templates`);
  }
  const { images, labels } = embedDataset(model, dataset, options);
  try {
    if (labels.length !== images.size(0)) throw new DatasetError(`${dataset.name} has no labels for every image`);
    const result = noGrad(() =>
      tidy(() => {
        const classifier = zeroShotClassifier(model, model.tokenize, classNames, templates); // (C, E)
        const logits = images.matmul(classifier.transpose(0, 1)); // (N, C) cosine similarities, no scale
        const target = Tensor.fromArray(labels, [labels.length], { dtype: "int64", device: options.device });
        return zeroShotMetrics(logits, target);
      })
    );
    return { ...result, classes: classNames.length, templates: templates.length };
  } finally {
    images.dispose();
  }
}

/** I2T and T2I recall@K with the captions deduplicated (a text's positives are all images carrying it). */
export function runRetrieval(
  model: EvalModel,
  dataset: EvalDataset,
  options: RunOptions & { ks?: number[] },
): RetrievalResult & { images: number; texts: number } {
  const { images, captions } = embedDataset(model, dataset, options);
  try {
    if (captions.length !== images.size(0)) throw new DatasetError(`${dataset.name} has no caption for every image`);
    const ids = new Map<string, number>();
    const texts: string[] = [];
    const textToImages: number[][] = [];
    captions.forEach((caption, i) => {
      let id = ids.get(caption);
      if (id === undefined) {
        id = texts.length;
        ids.set(caption, id);
        texts.push(caption);
        textToImages.push([]);
      }
      textToImages[id].push(i);
    });
    const textEmbeds: Tensor[] = [];
    try {
      for (let start = 0; start < texts.length; start += options.batchSize) {
        const chunk = texts.slice(start, start + options.batchSize);
        textEmbeds.push(noGrad(() => tidy(() => model.encodeText(model.tokenize(chunk))).keep())); // (n, E)
      }
      const all = tidy(() => cat(textEmbeds, 0)).keep(); // (T, E)
      try {
        const recall = retrievalRecall(images, all, textToImages, options.ks ?? [1, 5, 10]);
        return { ...recall, images: images.size(0), texts: texts.length };
      } finally {
        all.dispose();
      }
    } finally {
      for (const t of textEmbeds) t.dispose();
    }
  } finally {
    images.dispose();
  }
}
