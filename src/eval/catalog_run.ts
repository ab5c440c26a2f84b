// catalog_run.ts: zero-shot over the official suite (an official dataset_catalog.json with its labels.json and
// templates.json), one row per dataset in file order with its official metric, and their mean. A dataset that cannot
// be opened (not downloaded, wrong layout) costs its row, not the rest of the suite: it is reported through
// `onDatasetError`, recorded as `{ error }` and counted in `failed`.
import { basename } from "node:path";
import { catalogTable, officialMetric, readCatalog } from "./catalog.ts";
import { DatasetError, type EvalDataset } from "./datasets.ts";
import { fileEvalDataset } from "./file_datasets.ts";
import type { EvalModel } from "./model.ts";
import { confusionMatrixPng } from "./plots.ts";
import { displayNames, formatColumns, pct, skippedText } from "./report_table.ts";
import { readZeroShotPrompts, type RunOptions, runZeroShot, type ZeroShotPrompts } from "./run.ts";

/**
 * Where a picture goes: given a file name and its PNG (made only if wanted), returns the path written, or undefined
 * when pictures are not wanted.
 */
export type PlotSink = (file: string, png: () => Uint8Array) => string | undefined;

/** What runCatalog reads and where its pictures and per-dataset failures go. */
export interface CatalogRunOptions extends RunOptions {
  /** The official dataset_catalog.json. */
  catalog: string;
  /** labels.json and templates.json (dataset key → class names / templates). */
  labels: string;
  templates: string;
  /** Only these catalog keys (all of them when absent). */
  datasets?: readonly string[];
  /** Where relative catalog paths start (default: the working directory). */
  root?: string;
  /** Image decode threads. */
  threads?: number;
  /** Confusion matrices, `<key>-confusion.png`. */
  writePlot?: PlotSink;
  /** Told of each dataset that could not be opened. */
  onDatasetError?: (key: string, error: DatasetError) => void;
}

/** The suite's table, its JSON-ready record (`{ datasets: { key: result } }`), pictures written, datasets failed. */
export interface CatalogReport {
  table: string;
  results: Record<string, unknown>;
  plots: string[];
  failed: number;
}

/** A file-name-safe name for a dataset's pictures: "kind-<last path part without extension>" for KIND:VALUE sets. */
export function plotFileName(name: string): string {
  const colon = name.indexOf(":");
  const short = colon < 0
    ? name
    : `${name.slice(0, colon)}-${basename(name.slice(colon + 1).replace(/\/+$/, "")).replace(/\.[a-z]+$/i, "")}`;
  return short.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "dataset";
}

/** Runs zero-shot over every (selected) catalog entry in file order. */
export function runCatalog(model: EvalModel, options: CatalogRunOptions): CatalogReport {
  const entries = readCatalog(options.catalog);
  const wanted = options.datasets;
  if (wanted !== undefined) {
    const unknown = wanted.filter((w) => !entries.some(([key]) => key === w));
    if (unknown.length > 0) {
      throw new DatasetError(
        `${options.catalog} has no ${unknown.join(", ")} (it has ${entries.map(([k]) => k).join(", ")})`,
      );
    }
  }
  const rows: string[][] = [];
  const results: Record<string, unknown> = {};
  const plots: string[] = [];
  const officialValues: number[] = [];
  let failed = 0;
  const skips: Record<string, string> = {};
  for (const [key, entry] of entries) {
    if (wanted !== undefined && !wanted.includes(key)) continue;
    let dataset: EvalDataset, prompts: ZeroShotPrompts;
    try {
      prompts = readZeroShotPrompts(options.labels, options.templates, key);
      const table = catalogTable(key, entry, { root: options.root, classNames: prompts.classNames });
      try {
        dataset = fileEvalDataset(table, {
          imageSize: model.imageSize,
          threads: options.threads,
          normalize: model.normalize,
        });
      } catch (error) {
        table.close?.();
        throw error;
      }
    } catch (error) {
      if (!(error instanceof DatasetError)) throw error;
      options.onDatasetError?.(key, error);
      rows.push([key, "error", "-", "", "", "", "", ""]);
      results[key] = { error: error.message };
      failed += 1;
      continue;
    }
    try {
      const r = runZeroShot(model, dataset, { batchSize: options.batchSize, device: options.device, prompts });
      const official = officialMetric(key, r);
      officialValues.push(official.value);
      rows.push([
        key,
        official.metric,
        pct(official.value),
        pct(r.top1),
        pct(r.top5),
        pct(r.meanPerClass),
        String(r.count),
        String(r.skippedTotal),
      ]);
      if (r.skippedTotal > 0) skips[key] = skippedText(r.skippedTotal, r.skipped);
      const { confusion, ...rest } = r;
      results[key] = { ...rest, metric: official.metric, value: official.value };
      const plot = options.writePlot?.(
        `${plotFileName(key)}-confusion.png`,
        () => confusionMatrixPng(confusion, displayNames(prompts.classNames), `${key} zero-shot`),
      );
      if (plot) plots.push(plot);
    } finally {
      dataset.close?.();
    }
  }
  // The mean of the official metrics over the datasets evaluated (the paper's "average" column when all 26 ran).
  const mean = officialValues.reduce((a, b) => a + b, 0) / officialValues.length;
  if (officialValues.length > 1) rows.push([`average of ${officialValues.length}`, "", pct(mean), "", "", "", "", ""]);
  const header = ["dataset", "metric", "value", "top-1", "top-5", "mean/class", "images", "skipped"];
  const notes = Object.entries(skips).map(([key, text]) => `${key}: skipped ${text}`);
  return {
    table: [formatColumns(header, rows, 2), ...notes].join("\n"),
    results: { datasets: results },
    plots,
    failed,
  };
}
