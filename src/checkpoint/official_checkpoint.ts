// official_checkpoint.ts: checkpoints written by the official DetailCLIP code (docs/training.md#checkpoints-and-resume:
// torch.save of a dict with epoch, state_dict with the DDP `module.` prefix, optimizer, scaler, best_acc and args, an
// argparse.Namespace), and plain state-dict `.pt` files, mapped onto our models for evaluation, backbone export and
// continued training. No key map is needed: our state-dict keys are the official ones
// (docs/model.md#module-order-and-state-dict-names), `module.` is stripped and the load is strict. The file is read by
// src/torch/pt_file.ts (safe unpickler, nothing executed), one tensor at a time. What the official files do not hold
// cannot be recovered: the tokenizer (text needs a BPE merges file, e.g. OpenAI's bpe_simple_vocab_16e6.txt.gz), the
// iBOT centers and the RNG state (docs/training.md#checkpoints-and-resume; a resume starts the centers at zero and
// reseeds).
import type { AnyModel } from "../models/build.ts";
import { type ModelConfig, modelPreset, parseModelConfig, presetNames } from "../models/configs.ts";
import { PickleTuple, type PickleValue } from "../formats/pickle.ts";
import { type Device, noGrad } from "../torch/mod.ts";
import { isZipFile, PickledNamespace, PtFile, PtTensorRef } from "../torch/pt_file.ts";

/** An official checkpoint that does not fit what was asked of it; the message names the file and the problem. */
export class OfficialCheckpointError extends Error {
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "OfficialCheckpointError";
  }
}

/** What an official (or plain state-dict) `.pt` holds; tensors are references read on demand. Close it. */
export interface OfficialCheckpoint {
  path: string;
  file: PtFile;
  /** The model's state dict with a leading `module.` stripped from every key, in file order. */
  weights: Map<string, PtTensorRef>;
  /** The pickled argparse.Namespace (or dict) of the run's options; empty for a plain state dict. */
  args: Map<string, PickleValue>;
  /** Epochs completed (the official loop saves epoch + 1); null for a plain state dict. */
  epoch: number | null;
  optimizer: PickleValue | null;
  scaler: PickleValue | null;
  bestAcc: number | null;
  close(): void;
  [Symbol.dispose](): void;
}

/** True for a file that goes through this importer: a zip archive (torch.save) or a `.pt`/`.pth` name. */
export function isTorchCheckpoint(path: string): boolean {
  return isZipFile(path) || /\.(pt|pth|pth\.tar)$/i.test(path);
}

const WRAPPER_KEYS = ["state_dict", "model", "module"];

/** Opens an official checkpoint or a plain state dict (keys with or without `module.`). */
export function openOfficialCheckpoint(path: string): OfficialCheckpoint {
  const file = PtFile.open(path);
  try {
    const root = file.root;
    if (!(root instanceof Map)) throw new OfficialCheckpointError(path, "holds a pickled value other than a dict");
    const isStateDict = (value: PickleValue | undefined): value is Map<PickleValue, PickleValue> =>
      value instanceof Map && value.size > 0 && [...value.values()].every((v) => v instanceof PtTensorRef);
    const wrapperKey = WRAPPER_KEYS.find((key) => isStateDict(root.get(key)));
    const stateDict = wrapperKey !== undefined ? root.get(wrapperKey) : root;
    if (!isStateDict(stateDict)) {
      const keys = [...root.keys()].slice(0, 12).map(String).join(", ");
      throw new OfficialCheckpointError(
        path,
        `holds neither a state dict of tensors nor a checkpoint with one under ${WRAPPER_KEYS.join("/")} ` +
          `(top-level keys: ${keys})`,
      );
    }
    const weights = new Map<string, PtTensorRef>();
    for (const [key, ref] of stateDict) {
      if (typeof key !== "string") {
        throw new OfficialCheckpointError(path, `state dict key ${String(key)} is not a str`);
      }
      const name = key.startsWith("module.") ? key.slice("module.".length) : key;
      if (weights.has(name)) throw new OfficialCheckpointError(path, `state dict holds '${name}' twice`);
      weights.set(name, ref as PtTensorRef);
    }
    const wrapped = wrapperKey !== undefined;
    const number = (key: string): number | null => {
      const value = wrapped ? root.get(key) : undefined;
      return typeof value === "number" ? value : null;
    };
    const rawArgs = wrapped ? root.get("args") : undefined;
    const args = new Map<string, PickleValue>();
    if (rawArgs instanceof PickledNamespace) { for (const [k, v] of rawArgs.attributes) args.set(k, v); }
    else if (rawArgs instanceof Map) { for (const [k, v] of rawArgs) if (typeof k === "string") args.set(k, v); }
    return {
      path,
      file,
      weights,
      args,
      epoch: number("epoch"),
      optimizer: wrapped ? root.get("optimizer") ?? null : null,
      scaler: wrapped ? root.get("scaler") ?? null : null,
      bestAcc: number("best_acc"),
      close: () => file.close(),
      [Symbol.dispose]: () => file.close(),
    };
  } catch (error) {
    file.close();
    throw error;
  }
}

/**
 * The architecture of an official checkpoint: the preset named by `model` (the --model option) or else by
 * args.model (e.g. "DetailCLIP_VITB16"), with args.mask_ratio and the vocabulary size of the tokenizer when one is
 * given (it must equal the token embedding's rows), else of the token embedding.
 */
export function officialModelConfig(
  checkpoint: OfficialCheckpoint,
  options: { model?: string; vocab?: number } = {},
): ModelConfig {
  const { path, args } = checkpoint;
  const fromArgs = args.get("model");
  const name = options.model ?? (typeof fromArgs === "string" ? fromArgs : undefined);
  if (name === undefined) {
    throw new OfficialCheckpointError(
      path,
      `carries no args.model to name its architecture; pass --model (known: ${presetNames().join(", ")})`,
    );
  }
  const source = options.model !== undefined ? "--model" : "args.model";
  let preset: ModelConfig;
  try {
    preset = modelPreset(name);
  } catch {
    throw new OfficialCheckpointError(
      path,
      `${source} is '${name}', which is not a model here; pass --model (known: ${presetNames().join(", ")})`,
    );
  }
  const maskRatio = args.get("mask_ratio");
  // The vocabulary is the tokenizer's when one is given (it must then match the weights), else the weights' own.
  const rows = checkpoint.weights.get("token_embedding.weight")?.shape[0];
  if (options.vocab !== undefined && rows !== undefined && rows !== options.vocab) {
    throw new OfficialCheckpointError(
      path,
      `the BPE vocabulary (--bpe) has ${options.vocab} tokens, but token_embedding.weight has ${rows} rows`,
    );
  }
  const vocab = options.vocab ?? rows;
  const text = vocab !== undefined ? { ...preset.text, vocab } : preset.text;
  const raw = preset.kind === "detailclip" && typeof maskRatio === "number" && maskRatio >= 0 && maskRatio <= 1
    ? { ...preset, text, maskRatio }
    : { ...preset, text };
  return parseModelConfig(raw, `${path} (${source} ${name})`);
}

/**
 * Throws unless the checkpoint's weights fit `model` exactly: every key present, none extra, every shape equal.
 * The message names each mis-shaped key with both shapes. No tensor is read.
 */
export function checkWeightsFit(model: AnyModel, checkpoint: OfficialCheckpoint, modelName: string): void {
  const own = model.stateDict();
  const missing = [...own.keys()].filter((key) => !checkpoint.weights.has(key));
  const unexpected = [...checkpoint.weights.keys()].filter((key) => !own.has(key));
  const misshaped: string[] = [];
  for (const [key, target] of own) {
    const ref = checkpoint.weights.get(key);
    if (ref === undefined) continue;
    const a = ref.shape, b = target.shape;
    if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
      misshaped.push(`${key} is [${a.join(", ")}] in the file but [${b.join(", ")}] in the model`);
    }
  }
  if (missing.length + unexpected.length + misshaped.length === 0) return;
  const list = (what: string, items: string[]): string =>
    items.length === 0
      ? ""
      : `; ${items.length} ${what}: ${items.slice(0, 4).join(", ")}${items.length > 4 ? ", ..." : ""}`;
  throw new OfficialCheckpointError(
    checkpoint.path,
    `the weights do not fit model '${modelName}'${list("mis-shaped", misshaped)}${list("missing", missing)}` +
      `${list("unexpected", unexpected)} (a different architecture: pass --model with the right preset)`,
  );
}

/** Copies every weight into `model` (strict: checkWeightsFit first), one tensor at a time. */
export function loadOfficialWeights(
  model: AnyModel,
  checkpoint: OfficialCheckpoint,
  options: { modelName: string; device?: Device },
): void {
  checkWeightsFit(model, checkpoint, options.modelName);
  noGrad(() => {
    for (const [key, target] of model.stateDict()) {
      using source = checkpoint.file.tensor(checkpoint.weights.get(key)!, { device: options.device });
      target.copy_(source);
    }
  });
}

/** args as JSON-friendly data (tuples become arrays), for logs and summaries. */
export function argsToPlain(args: Map<string, PickleValue>): Record<string, unknown> {
  const plain = (value: PickleValue): unknown => {
    if (value instanceof PickleTuple) return value.items.map(plain);
    if (Array.isArray(value)) return value.map(plain);
    if (value instanceof Map) return Object.fromEntries([...value].map(([k, v]) => [String(k), plain(v)]));
    if (typeof value === "bigint") return value.toString();
    if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
    if (value instanceof PtTensorRef) return `<tensor [${value.shape.join(", ")}]>`;
    return value;
  };
  return Object.fromEntries([...args].map(([k, v]) => [k, plain(v)]));
}
