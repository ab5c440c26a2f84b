// validation.ts: evaluation on real data while training, as OpenCLIP's --zeroshot-frequency / --val-data and the
// official loop's per-epoch ImageNet zero-shot do it: zero-shot classification of a labelled set (an ImageFolder or any
// classification kind `deno task eval` reads, or one entry of the official dataset_catalog.json, with class names and
// templates from the official labels/templates files or given inline), and on held-out image–caption pairs (CSV/TSV
// or webdataset) the CLIP loss and image↔text recall@1/5/10. Rank 0 evaluates the student towers in eval mode, fp32,
// no gradient; the other ranks go on to the next step's collectives and wait there. The chosen --best-metric decides
// when the checkpoint of a validation step also becomes checkpoint-best.
//
// Trade-offs: the datasets are listed once at start-up and decoded again at every validation (nothing is cached), and
// the validation loss uses the per-rank batch size and no gather: the number depends on --batch-size, not on the world
// size, as OpenCLIP's does.
import { cat, type Device, F, noGrad, Tensor, tidy } from "../torch/mod.ts";
import { catalogTable, readCatalog } from "../eval/catalog.ts";
import { DatasetError, type EvalDataset } from "../eval/datasets.ts";
import { FILE_DATASET_KINDS, openFileDataset, parseDatasetSpec } from "../eval/dataset_spec.ts";
import { fileEvalDataset } from "../eval/file_datasets.ts";
import { csvEvalTable, webDatasetEvalTable } from "../eval/manifests.ts";
import type { EvalModel } from "../eval/model.ts";
import { retrievalRecall } from "../eval/retrieval.ts";
import { embedDataset, readZeroShotPrompts, retrievalTexts, runZeroShot, type ZeroShotPrompts } from "../eval/run.ts";
import type { ClipTokenizer } from "../data/tokenizer.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import type { AnyModel } from "../models/build.ts";
import { OptionError, type TrainOptions } from "./options.ts";

/** The --best-metric names: the flat metric each reads and whether larger is better. */
export const BEST_METRICS = {
  "zeroshot-top1": { key: "zeroshot/top1", larger: true },
  "zeroshot-top5": { key: "zeroshot/top5", larger: true },
  "zeroshot-mean-per-class": { key: "zeroshot/mean_per_class", larger: true },
  "val-loss": { key: "val/clip_loss", larger: false },
  "val-r1-mean": { key: "val/r1_mean", larger: true },
  "val-i2t-r1": { key: "val/i2t_r1", larger: true },
  "val-t2i-r1": { key: "val/t2i_r1", larger: true },
} as const;
export type BestMetricName = keyof typeof BEST_METRICS;

/** The best value so far, kept in checkpoint metadata so a resumed run keeps judging against it. */
export interface BestRecord {
  metric: BestMetricName;
  value: number;
  step: number;
}

/** Held-out pairs whose path looks like tar shards are webdataset; anything else is a CSV/TSV manifest. */
export function isWebDatasetSpec(spec: string): boolean {
  return /\.tar(\}|$|,|::)/.test(spec);
}

/** Splits inline `--zeroshot-templates` ("a photo of a {}.|a drawing of a {}.") or reads them from templates.json. */
function zeroShotPromptsOf(options: TrainOptions): Partial<ZeroShotPrompts> {
  const { zeroshotClasses: classes, zeroshotTemplates: templates, zeroshotKey: key } = options;
  const isJson = (value: string | undefined): boolean => value !== undefined && value.toLowerCase().endsWith(".json");
  if (isJson(classes) || isJson(templates)) {
    if (!isJson(classes) || !isJson(templates)) {
      throw new OptionError(
        "--zeroshot-classes and --zeroshot-templates: the official labels.json and templates.json go together",
      );
    }
    if (key === undefined) {
      throw new OptionError("--zeroshot-classes labels.json needs --zeroshot-key (the dataset's key in the files)");
    }
    try {
      return readZeroShotPrompts(classes!, templates!, key);
    } catch (error) {
      throw new OptionError(`--zeroshot-classes/--zeroshot-templates: ${(error as Error).message}`);
    }
  }
  const out: { classNames?: string[]; templates?: string[] } = {};
  if (classes !== undefined) out.classNames = classes.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (templates !== undefined) {
    out.templates = templates.split("|").map((s) => s.trim()).filter((s) => s !== "");
    const blind = out.templates.find((t) => !t.includes("{}"));
    if (blind !== undefined || out.templates.length === 0) {
      throw new OptionError(
        `--zeroshot-templates: ${JSON.stringify(blind ?? templates)} has no "{}" for the class name ` +
          "(templates are separated by |, or give a templates.json)",
      );
    }
  }
  return out;
}

/** Opens the zero-shot set of --zeroshot-data: `catalog:FILE` (an entry by --zeroshot-key), `KIND:VALUE`, or a folder. */
function openZeroShotData(options: TrainOptions, imageSize: number, prompts: Partial<ZeroShotPrompts>): EvalDataset {
  const spec = options.zeroshotData!;
  const threads = options.workers || 1;
  if (spec.startsWith("catalog:")) {
    const path = spec.slice("catalog:".length);
    const entries = readCatalog(path);
    const key = options.zeroshotKey;
    const entry = entries.find(([k]) => k === key);
    if (entry === undefined) {
      throw new OptionError(
        `--zeroshot-data ${spec}: choose an entry with --zeroshot-key (${entries.map(([k]) => k).join(", ")})`,
      );
    }
    const table = catalogTable(entry[0], entry[1], { classNames: prompts.classNames });
    return fileEvalDataset(table, { imageSize, threads });
  }
  const parsed = parseDatasetSpec(spec);
  const kinds = Object.keys(FILE_DATASET_KINDS).filter((k) => k !== "karpathy");
  if (parsed === null) {
    let folder = false;
    try {
      folder = Deno.statSync(spec).isDirectory;
    } catch { /* reported below */ }
    if (!folder) {
      throw new OptionError(
        `--zeroshot-data ${spec}: expected a folder (ImageFolder), catalog:FILE or KIND:VALUE with KIND one of ` +
          kinds.join(", "),
      );
    }
    return openFileDataset(`imagefolder:${spec}`, {
      task: "classification",
      imageSize,
      classNames: prompts.classNames,
      threads,
    });
  }
  return openFileDataset(spec, {
    task: "classification",
    imageSize,
    classNames: prompts.classNames,
    key: options.zeroshotKey,
    csvImageKey: options.csvImgKey,
    csvSeparator: options.csvSeparator,
    threads,
  });
}

/** Opens --val-data: held-out image–caption pairs (CSV/TSV with the training's column options, or tar shards). */
function openValData(options: TrainOptions, imageSize: number): EvalDataset {
  const spec = options.valData!;
  const threads = options.workers || 1;
  const table = isWebDatasetSpec(spec) ? webDatasetEvalTable({ shards: spec, task: "retrieval" }) : csvEvalTable({
    path: spec,
    task: "retrieval",
    imageColumn: options.csvImgKey,
    captionColumn: options.csvCaptionKey,
    separator: options.csvSeparator,
  });
  try {
    return fileEvalDataset(table, { imageSize, threads });
  } catch (error) {
    table.close?.();
    throw error;
  }
}

/** What validation needs to know of the model being trained. */
export interface TrainedModelView {
  model: AnyModel;
  tokenizer: ClipTokenizer;
  contextLength: number;
  device: Device;
  step: number;
}

/** The training model (student towers) seen as an EvalModel; it stays owned by the loop (dispose does nothing). */
function evalView(view: TrainedModelView): EvalModel {
  const { model, tokenizer, contextLength, device } = view;
  return {
    model,
    tokenizer,
    contextLength,
    imageSize: model.config.vision.imageSize,
    ema: false,
    step: view.step,
    tokenize: (texts: string[]): Tensor => {
      const ids = tokenizer.tokenize(texts, contextLength);
      if (device === "cpu") return ids;
      using _host = ids;
      return ids.to({ device });
    },
    encodeImage: (images: Tensor): Tensor =>
      model instanceof DetailCLIP ? model.encodeImage(images, { ema: false }) : model.encodeImage(images),
    encodeText: (tokens: Tensor): Tensor =>
      model instanceof DetailCLIP ? model.encodeText(tokens, { ema: false }) : model.encodeText(tokens),
    tower: model.visual,
    dispose: (): void => {},
  };
}

/**
 * OpenCLIP's validation loss: for each batch of `batchSize` consecutive pairs, ½·[CE(s·I·Tᵀ, y) + CE(s·T·Iᵀ, y)] with
 * y = the diagonal and s = exp(logit_scale); the mean over batches weighted by their size. images, captions: (N, E)
 * normalised, row i of each is one pair.
 */
export function clipValidationLoss(images: Tensor, captions: Tensor, logitScale: number, batchSize: number): number {
  const count = images.size(0);
  let sum = 0;
  for (let start = 0; start < count; start += batchSize) {
    const n = Math.min(batchSize, count - start);
    sum += n * noGrad(() =>
      tidy(() => {
        const image = images.narrow(0, start, n); // (n, E)
        const text = captions.narrow(0, start, n); // (n, E)
        const logits = image.matmul(text.transpose(0, 1)).mul(logitScale); // (n, n)
        const labels = Tensor.arange(0, n, 1, { device: images.device }); // (n)
        const loss = F.crossEntropy(logits, labels).add(F.crossEntropy(logits.transpose(0, 1), labels)).div(2);
        return loss.item();
      })
    );
  }
  return sum / Math.max(count, 1);
}

/** Zero-shot and held-out-pair validation during training, configured from the options. */
export class TrainValidation {
  readonly best: BestMetricName | null;
  #zeroshot: EvalDataset | null = null;
  #zeroshotPrompts: Partial<ZeroShotPrompts> = {};
  #val: EvalDataset | null = null;
  readonly #options: TrainOptions;
  #bestRecord: BestRecord | null = null;

  /** Checks the options on every rank (so all stop alike); opens the datasets on rank 0 only. */
  constructor(options: TrainOptions, imageSize: number, rank: number) {
    this.#options = options;
    const zeroshot = options.zeroshotData !== undefined;
    const val = options.valData !== undefined;
    for (
      const [flag, value] of [
        ["--zeroshot-classes", options.zeroshotClasses],
        ["--zeroshot-templates", options.zeroshotTemplates],
        ["--zeroshot-key", options.zeroshotKey],
        ["--zeroshot-frequency", options.zeroshotFrequency],
      ] as const
    ) {
      if (value !== undefined && !zeroshot) throw new OptionError(`${flag} needs --zeroshot-data`);
    }
    if (options.valFrequency !== undefined && !val) throw new OptionError("--val-frequency needs --val-data");
    if (options.valFrequencySteps !== undefined && !zeroshot && !val) {
      throw new OptionError("--val-frequency-steps needs --zeroshot-data or --val-data");
    }
    const best = (options.bestMetric ?? (zeroshot ? "zeroshot-top1" : val ? "val-loss" : null)) as
      | BestMetricName
      | null;
    if (best !== null && !(best in BEST_METRICS)) {
      throw new OptionError(`--best-metric ${best}: expected one of ${Object.keys(BEST_METRICS).join(", ")}`);
    }
    if (best !== null && best.startsWith("zeroshot-") && !zeroshot) {
      throw new OptionError(`--best-metric ${best} needs --zeroshot-data`);
    }
    if (best !== null && best.startsWith("val-") && !val) {
      throw new OptionError(`--best-metric ${best} needs --val-data`);
    }
    this.best = best;
    if (zeroshot) this.#zeroshotPrompts = zeroShotPromptsOf(options);
    if (rank !== 0) return;
    try {
      if (zeroshot) this.#zeroshot = openZeroShotData(options, imageSize, this.#zeroshotPrompts);
      if (val) this.#val = openValData(options, imageSize);
    } catch (error) {
      this.close();
      if (error instanceof DatasetError) {
        const flag = this.#zeroshot === null && zeroshot ? "--zeroshot-data" : "--val-data";
        throw new OptionError(`${flag}: ${error.message}`);
      }
      throw error;
    }
  }

  /** Whether anything is configured (the default synthetic run has nothing). */
  get enabled(): boolean {
    return this.#options.zeroshotData !== undefined || this.#options.valData !== undefined;
  }

  /**
   * What is due after optimizer step `step`: every --zeroshot-frequency / --val-frequency epochs at an epoch's end
   * (1 when unset), every --val-frequency-steps steps (both), and always at the last step.
   */
  due(step: number, stepsPerEpoch: number, lastStep: number): { zeroshot: boolean; val: boolean } {
    const o = this.#options;
    const byEpoch = (every: number | undefined): boolean =>
      step % stepsPerEpoch === 0 && (step / stepsPerEpoch) % (every ?? 1) === 0;
    const bySteps = o.valFrequencySteps !== undefined && step % o.valFrequencySteps === 0;
    const always = step === lastStep || bySteps;
    return {
      zeroshot: o.zeroshotData !== undefined && (always || byEpoch(o.zeroshotFrequency)),
      val: o.valData !== undefined && (always || byEpoch(o.valFrequency)),
    };
  }

  /** Runs what is due on rank 0 (eval mode, restored after); returns flat metrics (`zeroshot/top1`, `val/i2t_r1`...). */
  run(view: TrainedModelView, what: { zeroshot: boolean; val: boolean }): Record<string, number> {
    const { model } = view;
    const wasTraining = model.training;
    model.eval();
    try {
      const metrics: Record<string, number> = {};
      const evalModel = evalView(view);
      const run = { batchSize: Math.max(this.#options.batchSize, 1), device: view.device };
      if (what.zeroshot && this.#zeroshot !== null) {
        const prompts = this.#zeroshotPrompts;
        const r = runZeroShot(evalModel, this.#zeroshot, {
          ...run,
          prompts: prompts.classNames !== undefined || prompts.templates !== undefined
            ? {
              classNames: prompts.classNames ?? this.#zeroshot.classNames ?? [],
              templates: prompts.templates ?? this.#zeroshot.templates ?? [],
            }
            : undefined,
        });
        metrics["zeroshot/top1"] = r.top1;
        metrics["zeroshot/top5"] = r.top5;
        metrics["zeroshot/mean_per_class"] = r.meanPerClass;
        metrics["zeroshot/images"] = r.count;
      }
      if (what.val && this.#val !== null) Object.assign(metrics, this.#runVal(evalModel, view, run));
      return metrics;
    } finally {
      model.train(wasTraining);
    }
  }

  #runVal(
    evalModel: EvalModel,
    view: TrainedModelView,
    run: { batchSize: number; device: Device },
  ): Record<string, number> {
    const dataset = this.#val!;
    const { images, captions, captionLists } = embedDataset(evalModel, dataset, run);
    const embedTexts = (texts: string[]): Tensor => {
      const parts: Tensor[] = [];
      try {
        for (let start = 0; start < texts.length; start += run.batchSize) {
          const chunk = texts.slice(start, start + run.batchSize);
          parts.push(
            noGrad(() => tidy(() => F.normalize(evalModel.encodeText(evalModel.tokenize(chunk)), { dim: -1 })).keep()),
          );
        }
        return tidy(() => cat(parts, 0)).keep(); // (T, E)
      } finally {
        for (const p of parts) p.dispose();
      }
    };
    try {
      // The loss pairs each image with its first caption, in order; recall ranks every caption (retrievalTexts).
      using firstCaptions = embedTexts(captions); // (N, E)
      const logitScale = noGrad(() => tidy(() => view.model.logit_scale.exp().item()));
      const loss = clipValidationLoss(images, firstCaptions, logitScale, run.batchSize);
      const { texts, textToImages } = retrievalTexts(dataset.name, images.size(0), captions, captionLists);
      using textEmbeds = embedTexts(texts);
      const recall = retrievalRecall(images, textEmbeds, textToImages, [1, 5, 10], 10);
      const out: Record<string, number> = { "val/clip_loss": loss };
      for (const k of [1, 5, 10]) {
        out[`val/i2t_r${k}`] = recall.imageToText[k];
        out[`val/t2i_r${k}`] = recall.textToImage[k];
      }
      out["val/r1_mean"] = (recall.imageToText[1] + recall.textToImage[1]) / 2;
      out["val/images"] = images.size(0);
      return out;
    } finally {
      images.dispose();
    }
  }

  /** The best record so far (from a resumed checkpoint, or this run's). */
  get bestRecord(): BestRecord | null {
    return this.#bestRecord;
  }

  /** Restores the best record a checkpoint carried (ignored when it judged by another metric). */
  restoreBest(record: unknown): void {
    const r = record as Partial<BestRecord> | null | undefined;
    if (r && r.metric === this.best && typeof r.value === "number" && typeof r.step === "number") {
      this.#bestRecord = { metric: r.metric, value: r.value, step: r.step };
    }
  }

  /** Whether `metrics` (of step `step`) beat the best so far by --best-metric; if so it becomes the best. */
  improves(metrics: Record<string, number>, step: number): boolean {
    if (this.best === null) return false;
    const { key, larger } = BEST_METRICS[this.best];
    const value = metrics[key];
    if (value === undefined || !Number.isFinite(value)) return false;
    const previous = this.#bestRecord?.value;
    const better = previous === undefined || (larger ? value > previous : value < previous);
    if (better) this.#bestRecord = { metric: this.best, value, step };
    return better;
  }

  close(): void {
    this.#zeroshot?.close?.();
    this.#val?.close?.();
    this.#zeroshot = null;
    this.#val = null;
  }
}

/** One log line of validation metrics. */
export function describeValidation(step: number, metrics: Record<string, number>): string {
  const parts: string[] = [];
  if (metrics["zeroshot/top1"] !== undefined) {
    parts.push(
      `zero-shot top-1 ${metrics["zeroshot/top1"].toFixed(1)}% top-5 ${metrics["zeroshot/top5"].toFixed(1)}% ` +
        `(${metrics["zeroshot/images"]} images)`,
    );
  }
  if (metrics["val/clip_loss"] !== undefined) {
    parts.push(
      `val loss ${metrics["val/clip_loss"].toFixed(4)}, image→text R@1/5/10 ` +
        `${[1, 5, 10].map((k) => metrics[`val/i2t_r${k}`].toFixed(1)).join("/")}%, text→image ` +
        `${[1, 5, 10].map((k) => metrics[`val/t2i_r${k}`].toFixed(1)).join("/")}% (${metrics["val/images"]} images)`,
    );
  }
  return `validation at step ${step}: ${parts.join("; ")}`;
}
