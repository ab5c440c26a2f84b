// catalog.ts: the official downstream zero-shot suite (docs/evaluation.md#the-official-zero-shot-suite):
// `dataset_catalog.json` (dataset key → {path, type: imagefolder | special | filelist, train, test}) read in file
// order, each entry opened as an evaluation set, and the metric the official eval_zeroshot.py reports for each key:
// mean per-class accuracy for aircraft, pets, caltech101 and flowers, (top-1 + top-5)/2 for kinetics700_frames, ROC-AUC
// for hateful_memes, top-1 otherwise.
//
// Relative catalog paths resolve against --root when given, else the working directory, as the official script's
// did. Nothing is downloaded: a missing folder or file is an error that names it.
import { INPUT_CAPS, readInputText } from "../fs/input_file.ts";
import { isAbsolute, join } from "node:path";
import { DatasetError } from "./datasets.ts";
import type { EvalTable } from "./file_datasets.ts";
import { CLEVR_COUNTS_LABELS, fileListTable, imageFolderTable } from "./image_folder.ts";
import { SPECIAL_DATASETS, type SpecialDataset, specialTable } from "./torchvision_sets.ts";
import type { ZeroShotResult } from "./zeroshot.ts";

export interface CatalogEntry {
  path: string;
  type: "imagefolder" | "special" | "filelist";
  train?: string;
  test?: string;
}

/** Reads a dataset_catalog.json; the entries keep the file's order. */
export function readCatalog(path: string): [string, CatalogEntry][] {
  let json: unknown;
  try {
    json = JSON.parse(readInputText(path, path, INPUT_CAPS.labels)); // a FIFO or /dev/zero is refused unread
  } catch (cause) {
    throw new DatasetError(`catalog: cannot read ${path} as JSON (${(cause as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new DatasetError(`catalog: ${path} must be a JSON object of dataset key → {path, type, train, test}`);
  }
  return Object.entries(json).map(([key, value]) => {
    const e = value as Partial<CatalogEntry> | null;
    if (typeof e?.path !== "string") throw new DatasetError(`catalog: ${path} '${key}' has no 'path' string`);
    if (e.type !== "imagefolder" && e.type !== "special" && e.type !== "filelist") {
      throw new DatasetError(
        `catalog: ${path} '${key}' has type ${JSON.stringify(e.type)} (imagefolder, special or filelist expected)`,
      );
    }
    for (const field of ["train", "test"] as const) {
      if (e[field] !== undefined && typeof e[field] !== "string") {
        throw new DatasetError(`catalog: ${path} '${key}'.${field} must be a string`);
      }
    }
    return [key, { path: e.path, type: e.type, train: e.train, test: e.test }];
  });
}

export interface CatalogOpenOptions {
  /** Where relative catalog paths start (default: the working directory). */
  root?: string;
  classNames?: readonly (string | readonly string[])[];
}

/** Opens the test split of one catalog entry (SLIP's get_downstream_dataset with is_train = False). */
export function catalogTable(key: string, entry: CatalogEntry, options: CatalogOpenOptions = {}): EvalTable {
  const base = isAbsolute(entry.path) || options.root === undefined ? entry.path : join(options.root, entry.path);
  const needSplit = (): string => {
    if (entry.test === undefined) throw new DatasetError(`catalog: '${key}' (${entry.type}) has no 'test' split name`);
    return entry.test;
  };
  switch (entry.type) {
    case "imagefolder": {
      const table = imageFolderTable({ dir: join(base, needSplit()), name: key });
      return options.classNames === undefined ? table : { ...table, classNames: options.classNames };
    }
    case "filelist":
      return fileListTable({
        dir: base,
        split: needSplit(),
        labelMap: key === "clevr_counts" ? CLEVR_COUNTS_LABELS : undefined,
        classNames: options.classNames,
        name: key,
      });
    case "special":
      if (!(SPECIAL_DATASETS as readonly string[]).includes(key)) {
        throw new DatasetError(
          `catalog: '${key}' has type special, which the official code defines only for ${SPECIAL_DATASETS.join(", ")}`,
        );
      }
      return specialTable({ name: key as SpecialDataset, root: base, split: "test", classNames: options.classNames });
  }
}

/** The datasets whose official metric is mean per-class accuracy. */
export const MEAN_PER_CLASS_DATASETS = ["aircraft", "pets", "caltech101", "flowers"] as const;

export type OfficialMetricName = "top1" | "mean_per_class" | "top1_top5_mean" | "roc_auc";

/** The metric eval_zeroshot.py reports for `key`, in percent. */
export function officialMetric(key: string, result: ZeroShotResult): { metric: OfficialMetricName; value: number } {
  if ((MEAN_PER_CLASS_DATASETS as readonly string[]).includes(key)) {
    return { metric: "mean_per_class", value: result.meanPerClass };
  }
  if (key === "kinetics700_frames") return { metric: "top1_top5_mean", value: (result.top1 + result.top5) / 2 };
  if (key === "hateful_memes") return { metric: "roc_auc", value: result.rocAuc ?? NaN };
  return { metric: "top1", value: result.top1 };
}
