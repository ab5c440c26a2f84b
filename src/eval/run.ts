// run.ts: zero-shot classification and retrieval over an EvalDataset with an EvalModel: embed every image batch by
// batch (eval mode, no grad, fp32), then hand the embeddings to the metric functions of zeroshot.ts and retrieval.ts.
// Images a file dataset could not decode never reach the model: metrics are over the images seen, and the results
// carry the skipped count by reason so a table can say how many were left out.
import { INPUT_CAPS, readInputText } from "../fs/input_file.ts";
import { cat, type Device, F, noGrad, Tensor, tidy } from "../torch/mod.ts";
import { DatasetError, type EvalDataset } from "./datasets.ts";
import type { EvalModel } from "./model.ts";
import { groupEqualCaptions, retrievalRecall, type RetrievalResult } from "./retrieval.ts";
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

/** Reads `key` from an official labels.json and templates.json pair (docs/evaluation.md#the-official-zero-shot-suite);
 * list-valued labels are synonyms. */
export function readZeroShotPrompts(labelsPath: string, templatesPath: string, key: string): ZeroShotPrompts {
  const read = (path: string): Record<string, unknown> => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readInputText(path, path, INPUT_CAPS.labels)); // a FIFO or /dev/zero is refused unread
    } catch (cause) {
      throw new DatasetError(`cannot read ${path} as JSON (${(cause as Error).message.replace(`${path}: `, "")})`);
    }
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
  // Without "{}" a template is the same prompt for every class: the scores could not tell classes apart.
  const blind = (templates as string[]).find((t) => !t.includes("{}"));
  if (blind !== undefined) {
    throw new DatasetError(
      `${templatesPath}: '${key}' template ${JSON.stringify(blind)} has no "{}" for the class name, so every class ` +
        "would get the same prompt",
    );
  }
  return { classNames: labels as (string | string[])[], templates: templates as string[] };
}

/** Images a dataset left out, by reason, and their total. */
export interface SkipReport {
  skipped: Record<string, number>;
  skippedTotal: number;
}

function skipReport(dataset: EvalDataset): SkipReport {
  const skipped = dataset.skipped?.() ?? {};
  return { skipped, skippedTotal: Object.values(skipped).reduce((a, b) => a + b, 0) };
}

/** (N, E) L2-normalised image embeddings of the usable images, plus their labels and captions in order. */
export function embedDataset(
  model: EvalModel,
  dataset: EvalDataset,
  options: RunOptions,
): { images: Tensor; labels: number[]; captions: string[]; captionLists: string[][] } {
  const embeds: Tensor[] = [];
  const labels: number[] = [];
  const captions: string[] = [];
  const captionLists: string[][] = [];
  try {
    for (const batch of dataset.batches(options.batchSize, options.device)) {
      try {
        embeds.push(noGrad(() => tidy(() => F.normalize(model.encodeImage(batch.images), { dim: -1 })).keep()));
      } finally {
        batch.images.dispose();
      }
      if (batch.labels) labels.push(...batch.labels);
      if (batch.captions) captions.push(...batch.captions);
      if (batch.captionLists) captionLists.push(...batch.captionLists);
    }
    if (embeds.length === 0) {
      const { skipped } = skipReport(dataset);
      throw new DatasetError(`${dataset.name}: no usable image (left out: ${JSON.stringify(skipped)})`);
    }
    return { images: tidy(() => cat(embeds, 0)).keep(), labels, captions, captionLists }; // images: (N, E)
  } finally {
    for (const e of embeds) e.dispose();
  }
}

/** Zero-shot top-1 / top-5 / mean-per-class (percent) of `dataset` with `prompts` (default: the dataset's own). */
export function runZeroShot(
  model: EvalModel,
  dataset: EvalDataset,
  options: RunOptions & { prompts?: ZeroShotPrompts },
): ZeroShotResult & SkipReport & { classes: number; templates: number } {
  const classNames = options.prompts?.classNames ?? dataset.classNames;
  const templates = options.prompts?.templates ?? dataset.templates;
  if (classNames === undefined || templates === undefined) {
    throw new DatasetError(`${dataset.name} has no class names or templates; pass --labels and --templates`);
  }
  if (dataset.classes !== undefined && dataset.classes !== classNames.length) {
    throw new DatasetError(
      `${dataset.name} has ${dataset.classes} classes but the labels list names ${classNames.length}`,
    );
  }
  const { images, labels } = embedDataset(model, dataset, options);
  try {
    if (labels.length !== images.size(0)) throw new DatasetError(`${dataset.name} has no labels for every image`);
    const outside = labels.findIndex((l) => !(l >= 0 && l < classNames.length));
    if (outside >= 0) {
      throw new DatasetError(
        `${dataset.name}: label ${labels[outside]} has no class name (the labels list names ${classNames.length})`,
      );
    }
    const result = noGrad(() =>
      tidy(() => {
        const classifier = zeroShotClassifier(model, model.tokenize, classNames, templates); // (C, E)
        const logits = images.matmul(classifier.transpose(0, 1)); // (N, C) cosine similarities, no scale
        const target = Tensor.fromArray(labels, [labels.length], { dtype: "int64", device: options.device });
        return zeroShotMetrics(logits, target);
      })
    );
    return { ...result, ...skipReport(dataset), classes: classNames.length, templates: templates.length };
  } finally {
    images.dispose();
  }
}

/** The texts of a retrieval run and the images each describes. */
export function retrievalTexts(
  name: string,
  imageCount: number,
  captions: string[],
  captionLists: string[][],
): { texts: string[]; textToImages: number[][] } {
  // One caption per image, as lists (a CSV with a row per image, e.g. MNIST's class captions): the deduplicated
  // case below, since equal strings embed equally and no ranking can tell which image "owns" a shared caption.
  if (captionLists.length === imageCount && captionLists.every((list) => list.length === 1)) {
    captions = captionLists.map((list) => list[0]);
  } else if (captionLists.length === imageCount) {
    // Several captions per image (COCO, Flickr30K, grouped CSV rows): every caption is its own text query whose
    // only positive is its image, even when two images share a caption string.
    const texts: string[] = [];
    const textToImages: number[][] = [];
    captionLists.forEach((list, i) => {
      for (const caption of list) {
        texts.push(caption);
        textToImages.push([i]);
      }
    });
    return { texts, textToImages };
  }
  if (captions.length !== imageCount) throw new DatasetError(`${name} has no caption for every image`);
  // One caption per image (the synthetic set): equal captions are one text whose positives are all its images.
  const { texts, textToImages } = groupEqualCaptions(captions);
  return { texts, textToImages };
}

/**
 * I2T and T2I recall@K (and the R@1..R@curveK curves). With one caption per image (synthetic) captions are
 * deduplicated, a text's positives being every image carrying it; with caption lists every caption is a query.
 */
export function runRetrieval(
  model: EvalModel,
  dataset: EvalDataset,
  options: RunOptions & { ks?: number[]; curveK?: number },
): RetrievalResult & SkipReport & { images: number; texts: number } {
  const { images, captions, captionLists } = embedDataset(model, dataset, options);
  try {
    const { texts, textToImages } = retrievalTexts(dataset.name, images.size(0), captions, captionLists);
    const textEmbeds: Tensor[] = [];
    try {
      for (let start = 0; start < texts.length; start += options.batchSize) {
        const chunk = texts.slice(start, start + options.batchSize);
        textEmbeds.push(noGrad(() => tidy(() => model.encodeText(model.tokenize(chunk))).keep())); // (n, E)
      }
      const all = tidy(() => cat(textEmbeds, 0)).keep(); // (T, E)
      try {
        const recall = retrievalRecall(images, all, textToImages, options.ks ?? [1, 5, 10], options.curveK ?? 50);
        return { ...recall, ...skipReport(dataset), images: images.size(0), texts: texts.length };
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
