// dataset_spec.ts: what `--dataset KIND:VALUE` names for `deno task eval`, turned into an evaluation dataset. One
// place maps every file kind to its source (ImageFolder, CSV/TSV, webdataset, npy file list, torchvision's CIFAR /
// STL-10 / MNIST files, Karpathy JSON), so the command and the tests open datasets the same way. The synthetic sets
// are not here: they are built by the command with its own size options.
import { dirname } from "node:path";
import { DatasetError, type EvalDataset } from "./datasets.ts";
import { type EvalTable, fileEvalDataset, type FileEvalOptions } from "./file_datasets.ts";
import { CLEVR_COUNTS_LABELS, fileListTable, imageFolderTable } from "./image_folder.ts";
import { karpathyTable } from "./karpathy.ts";
import { csvEvalTable, type EvalTask, webDatasetEvalTable } from "./manifests.ts";
import { SPECIAL_DATASETS, type SpecialDataset, specialTable } from "./torchvision_sets.ts";

/** The file kinds `--dataset KIND:VALUE` accepts: what VALUE is and what is read (for --help and errors). */
export const FILE_DATASET_KINDS: Readonly<Record<string, readonly [string, string]>> = {
  imagefolder: ["DIR", "DIR/<class>/<image>; classes = sorted folder names (torchvision ImageFolder)"],
  csv: ["FILE", "CSV/TSV with a header: image path + label (zeroshot) or caption (retrieval)"],
  webdataset: ["PATTERN", "tar shards ({000..009}, ::): key.jpg + key.cls (zeroshot) or key.txt|json"],
  filelist: ["DIR", "DIR/<split>_images.npy + DIR/<split>_labels.npy (SLIP's FileListDataset)"],
  karpathy: ["FILE", "dataset_coco.json / dataset_flickr30k.json (retrieval; images under --root)"],
  cifar10: ["DIR", "torchvision's CIFAR10 root (cifar-10-batches-py/)"],
  cifar100: ["DIR", "torchvision's CIFAR100 root (cifar-100-python/)"],
  stl10: ["DIR", "torchvision's STL10 root (stl10_binary/)"],
  mnist: ["DIR", "torchvision's MNIST root (MNIST/raw/)"],
};

export interface DatasetSpecOptions {
  task: EvalTask;
  imageSize: number;
  /** Image normalisation (default ImageNet's; OpenAI/OpenCLIP weights need OpenAI's). */
  normalize?: FileEvalOptions["normalize"];
  /** Where relative image paths start (csv: default the manifest's folder; karpathy: default the JSON's folder). */
  root?: string;
  /** filelist / karpathy / special sets (default "test"). */
  split?: string;
  /** The labels.json key, when labels were given (filelist uses it for clevr_counts' label strings). */
  key?: string;
  classNames?: readonly (string | readonly string[])[];
  csvImageKey?: string;
  csvLabelKey?: string;
  csvCaptionKey?: string;
  csvSeparator?: string;
  /** The caption field of webdataset .json members (default "caption"). */
  jsonField?: string;
  threads?: number;
}

/** Splits "kind:value" (a value may itself hold colons); null when the kind is not a file kind. */
export function parseDatasetSpec(spec: string): { kind: string; value: string } | null {
  const colon = spec.indexOf(":");
  if (colon < 0) return null;
  const kind = spec.slice(0, colon), value = spec.slice(colon + 1);
  return kind in FILE_DATASET_KINDS ? { kind, value } : null;
}

/** Opens `--dataset KIND:VALUE`; throws a DatasetError naming the problem. */
export function openFileDataset(spec: string, options: DatasetSpecOptions): EvalDataset {
  const parsed = parseDatasetSpec(spec);
  if (parsed === null || parsed.value === "") {
    throw new DatasetError(
      `unknown dataset '${spec}' (synthetic, synthetic-heldout, or KIND:VALUE with KIND one of ${
        Object.keys(FILE_DATASET_KINDS).join(", ")
      })`,
    );
  }
  const { kind, value } = parsed;
  const classification = options.task === "classification";
  const split = options.split ?? "test";
  const needs = (task: EvalTask): void => {
    if (options.task !== task) {
      throw new DatasetError(`--dataset ${kind}:... is a ${task} set and cannot be used for ${options.task}`);
    }
  };
  let table: EvalTable;
  switch (kind) {
    case "imagefolder": {
      needs("classification");
      const folder = imageFolderTable({ dir: value });
      table = options.classNames === undefined ? folder : { ...folder, classNames: options.classNames };
      break;
    }
    case "csv":
      table = csvEvalTable({
        path: value,
        root: options.root,
        task: options.task,
        imageColumn: options.csvImageKey,
        labelColumn: options.csvLabelKey,
        captionColumn: options.csvCaptionKey,
        separator: options.csvSeparator,
        classNames: classification ? options.classNames : undefined,
      });
      break;
    case "webdataset":
      table = webDatasetEvalTable({
        shards: value,
        root: options.root,
        task: options.task,
        jsonField: options.jsonField,
        classNames: classification ? options.classNames : undefined,
      });
      break;
    case "filelist":
      needs("classification");
      table = fileListTable({
        dir: value,
        split,
        labelMap: options.key === "clevr_counts" ? CLEVR_COUNTS_LABELS : undefined,
        classNames: options.classNames,
      });
      break;
    case "karpathy":
      needs("retrieval");
      table = karpathyTable({ path: value, root: options.root ?? dirname(value), split });
      break;
    default: {
      needs("classification");
      if (split !== "test" && split !== "train") throw new DatasetError(`${kind}: --split must be test or train`);
      if (!(SPECIAL_DATASETS as readonly string[]).includes(kind)) {
        throw new DatasetError(`unknown dataset kind ${kind}`);
      }
      table = specialTable({ name: kind as SpecialDataset, root: value, split, classNames: options.classNames });
    }
  }
  try {
    return fileEvalDataset(table, {
      imageSize: options.imageSize,
      threads: options.threads,
      normalize: options.normalize,
    });
  } catch (error) {
    table.close?.();
    throw error;
  }
}
