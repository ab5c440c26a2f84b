// image_folder.ts: the two path-list layouts of the official zero-shot catalog
// (docs/evaluation.md#the-official-zero-shot-suite). "imagefolder" is torchvision's ImageFolder: class folders sorted
// by name give the label indices, the files under each (recursively, torchvision's extensions, sorted) are its images.
// "filelist" is SLIP's FileListDataset: `<split>_images.npy` (paths) beside `<split>_labels.npy` (ints, or strings
// mapped through a list, as clevr_counts does). Listing only: decoding and the eval transform happen in
// file_datasets.ts.
//
// Files that are not images by extension are ignored, as torchvision does; everything else is listed and left to the
// decoder, so a corrupt or unsupported image (bmp/tiff have no decoder here) is counted when it fails, never dropped
// unseen. Relative filelist paths resolve against the dataset folder, where the official code used the working
// directory.
import { isAbsolute, join } from "node:path";
import { SkipCounter } from "../data/loader.ts";
import { DatasetError } from "./datasets.ts";
import type { EvalItem, EvalTable } from "./file_datasets.ts";
import { readNpy } from "./npy.ts";

/** torchvision's IMG_EXTENSIONS (ImageFolder lists these; the decoder reads jpg, jpeg, png and webp). */
export const IMAGE_FOLDER_EXTENSIONS = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"];

/** Python's default string order (by code point), which torchvision's `sorted()` uses. */
export function compareCodePoints(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory; // follows symlinks, like os.walk(followlinks=True)
  } catch {
    return false;
  }
}

// Every image file under `dir`, in torchvision's order: folders sorted by path, files sorted within each.
function walkImages(dir: string): string[] {
  const folders: { path: string; files: string[] }[] = [];
  const visit = (path: string): void => {
    const files: string[] = [];
    for (const entry of Deno.readDirSync(path)) {
      const full = join(path, entry.name);
      if (entry.isDirectory || (entry.isSymlink && isDirectory(full))) visit(full);
      else if (IMAGE_FOLDER_EXTENSIONS.some((ext) => entry.name.toLowerCase().endsWith(ext))) files.push(entry.name);
    }
    folders.push({ path, files: files.sort(compareCodePoints) });
  };
  visit(dir);
  folders.sort((a, b) => compareCodePoints(a.path, b.path));
  return folders.flatMap((f) => f.files.map((name) => join(f.path, name)));
}

export interface ImageFolderOptions {
  /** The folder holding one sub-folder per class (e.g. root/test). */
  dir: string;
  /** Printed name (default "imagefolder:<dir>"). */
  name?: string;
}

/** Lists an ImageFolder; class names default to the folder names (labels.json replaces them by index). */
export function imageFolderTable(options: ImageFolderOptions): EvalTable {
  const { dir } = options;
  if (!isDirectory(dir)) {
    throw new DatasetError(`imagefolder: ${dir} is not a folder (expected ${dir}/<class>/<image>)`);
  }
  const classes = [...Deno.readDirSync(dir)]
    .filter((e) => e.isDirectory || (e.isSymlink && isDirectory(join(dir, e.name))))
    .map((e) => e.name)
    .sort(compareCodePoints);
  if (classes.length === 0) {
    throw new DatasetError(`imagefolder: ${dir} has no class folders (expected ${dir}/<class>/<image>)`);
  }
  const items: EvalItem[] = [];
  classes.forEach((name, label) => {
    for (const path of walkImages(join(dir, name))) items.push({ image: { path }, label });
  });
  if (items.length === 0) throw new DatasetError(`imagefolder: no image files under ${dir}/<class>/`);
  return {
    name: options.name ?? `imagefolder:${dir}`,
    items,
    classNames: classes,
    classes: classes.length,
    templates: ["a photo of a {}."],
    indexSkips: new SkipCounter(),
  };
}

/** clevr_counts' label strings in class-index order (SLIP's get_downstream_dataset). */
export const CLEVR_COUNTS_LABELS = [
  "count_10",
  "count_3",
  "count_4",
  "count_5",
  "count_6",
  "count_7",
  "count_8",
  "count_9",
] as const;

export interface FileListOptions {
  /** The dataset folder holding `<split>_images.npy` and `<split>_labels.npy`. */
  dir: string;
  split: string;
  /** String labels are looked up here (their index is the class); default: the class names. */
  labelMap?: readonly string[];
  classNames?: readonly (string | readonly string[])[];
  name?: string;
}

/** Lists a SLIP-style npy file list. */
export function fileListTable(options: FileListOptions): EvalTable {
  const imagesPath = join(options.dir, `${options.split}_images.npy`);
  const labelsPath = join(options.dir, `${options.split}_labels.npy`);
  const images = readNpy(imagesPath);
  const labels = readNpy(labelsPath);
  if (images.kind !== "string") {
    throw new DatasetError(`${imagesPath}: expected an array of path strings, got integers`);
  }
  if (images.values.length !== labels.values.length) {
    throw new DatasetError(
      `filelist: ${imagesPath} lists ${images.values.length} images but ${labelsPath} ${labels.values.length} labels`,
    );
  }
  let indices: number[];
  if (labels.kind === "int") {
    indices = labels.values;
  } else {
    const names = options.labelMap ??
      options.classNames?.map((n) => (typeof n === "string" ? n : n[0]));
    if (names === undefined) {
      throw new DatasetError(`${labelsPath}: string labels need a label list (labels.json for this dataset)`);
    }
    const lookup = new Map(names.map((n, i) => [n, i]));
    indices = labels.values.map((value, i) => {
      const index = lookup.get(value);
      if (index === undefined) {
        throw new DatasetError(`${labelsPath}: item ${i} has label '${value}', not one of ${names.join(", ")}`);
      }
      return index;
    });
  }
  const items: EvalItem[] = images.values.map((path, i) => ({
    image: { path: isAbsolute(path) ? path : join(options.dir, path) },
    label: indices[i],
  }));
  return {
    name: options.name ?? `filelist:${options.dir}`,
    items,
    classNames: options.classNames,
    classes: options.labelMap?.length,
    indexSkips: new SkipCounter(),
  };
}
