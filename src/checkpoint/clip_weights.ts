// clip_weights.ts: OpenAI and OpenCLIP weights from the files people have, into src/models/openclip.ts. Three
// containers, none of which runs code on load:
// - `.safetensors` (open_clip's `save_file(model.state_dict())`, the Hugging Face hub's open_clip_model.safetensors);
// - torch.save state dicts (`.bin`/`.pt`/`.pth`: open_clip_pytorch_model.bin, open_clip_train's epoch_N.pt with
//   `state_dict` and DDP's `module.`), read by the allow-listed unpickler (src/torch/pt_file.ts);
// - OpenAI's released `.pt` files, which are TorchScript archives (torch.jit.save): their data.pkl is the module tree as
//   attribute dicts, read by the same unpickler with TorchScript module objects allowed as plain attribute bags; the
//   archive's code/ is never read. The tree flattens to the state-dict keys (`visual.conv1.weight`, ...).
// The key map is the identity on open_clip's names after stripping a `module.` prefix; OpenAI's three scalar
// attributes (input_resolution, context_length, vocab_size, which its build_model deletes too) and attention-mask
// buffers are dropped by name. Every other key must be one of the model's: missing, unexpected and mis-shaped keys are
// an error that names them. Weights are read one at a time and converted to float32.
import { PickleError, type PickleValue } from "../formats/pickle.ts";
import { OpenClip } from "../models/openclip.ts";
import {
  inferOpenClipConfig,
  type OpenClipConfig,
  openClipPreset,
  openClipPresetNames,
  OpenClipShapeError,
} from "../models/openclip_configs.ts";
import { type Device, noGrad, type Tensor } from "../torch/mod.ts";
import { SafeTensorsError, SafeTensorsFile } from "../torch/io.ts";
import { isZipFile, PtFile, PtFileError, PtTensorRef, TorchScriptObject } from "../torch/pt_file.ts";

/** A weight file that is not OpenAI/OpenCLIP CLIP weights, or does not fit the asked architecture. */
export class ClipWeightsError extends Error {
  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(`${path}: ${message}`, options);
    this.name = "ClipWeightsError";
  }
}

export type ClipWeightsFormat = "safetensors" | "state dict" | "TorchScript archive";

/** An open weight file: every tensor's shape by (normalised) key, read on demand. Close it. */
export interface ClipWeightsFile {
  path: string;
  format: ClipWeightsFormat;
  shapes: Map<string, number[]>;
  read(key: string, device?: Device): Tensor;
  close(): void;
  [Symbol.dispose](): void;
}

/** Keys OpenAI's files and TorchScript trees carry that are not weights: dropped by name, never loaded. */
function isIgnoredKey(key: string): boolean {
  return key === "input_resolution" || key === "context_length" || key === "vocab_size" ||
    key === "attn_mask" || key.endsWith(".attn_mask");
}

const WRAPPER_KEYS = ["state_dict", "model", "module"];

function stripModule(key: string): string {
  return key.startsWith("module.") ? key.slice("module.".length) : key;
}

/** Opens `path` as safetensors or a torch.save / torch.jit.save zip archive. */
export function openClipWeights(path: string): ClipWeightsFile {
  if (!isZipFile(path)) return openSafeTensorsWeights(path);
  let file: PtFile;
  try {
    file = PtFile.open(path, { torchScript: true });
  } catch (error) {
    if (error instanceof PtFileError) throw new ClipWeightsError(path, error.message.replace(`${path}: `, ""));
    throw error;
  }
  try {
    const refs = new Map<string, PtTensorRef>();
    let format: ClipWeightsFormat;
    if (file.root instanceof TorchScriptObject) {
      format = "TorchScript archive";
      flattenTorchScript(file.root, "", refs, new Set());
    } else {
      format = "state dict";
      collectStateDict(path, file.root, refs);
    }
    const shapes = new Map<string, number[]>();
    for (const [key, ref] of refs) if (!isIgnoredKey(key)) shapes.set(key, [...ref.shape]);
    return {
      path,
      format,
      shapes,
      read: (key: string, device?: Device): Tensor => {
        const ref = refs.get(key);
        if (ref === undefined) throw new ClipWeightsError(path, `has no tensor '${key}'`);
        return file.tensor(ref, { device });
      },
      close: () => file.close(),
      [Symbol.dispose]: () => file.close(),
    };
  } catch (error) {
    file.close();
    throw error;
  }
}

function openSafeTensorsWeights(path: string): ClipWeightsFile {
  let file: SafeTensorsFile;
  try {
    file = SafeTensorsFile.open(path);
  } catch (error) {
    if (error instanceof SafeTensorsError || error instanceof Deno.errors.NotFound) {
      throw new ClipWeightsError(
        path,
        `neither a safetensors file nor a torch.save/torch.jit.save zip archive (${(error as Error).message})`,
        { cause: error },
      );
    }
    throw error;
  }
  const names = new Map<string, string>(); // normalised key -> stored name
  const shapes = new Map<string, number[]>();
  for (const stored of file.names()) {
    const key = stripModule(stored);
    if (names.has(key)) throw new ClipWeightsError(path, `holds '${key}' twice (with and without 'module.')`);
    names.set(key, stored);
    if (!isIgnoredKey(key)) shapes.set(key, file.info(stored).shape);
  }
  return {
    path,
    format: "safetensors",
    shapes,
    read: (key: string, device?: Device): Tensor => {
      const stored = names.get(key);
      if (stored === undefined) throw new ClipWeightsError(path, `has no tensor '${key}'`);
      return file.tensor(stored, { device });
    },
    close: () => file.close(),
    [Symbol.dispose]: () => file.close(),
  };
}

/** A torch.save'd state dict, bare or under state_dict/model/module, keys with or without `module.`. */
function collectStateDict(path: string, root: PickleValue, out: Map<string, PtTensorRef>): void {
  if (!(root instanceof Map)) throw new ClipWeightsError(path, "holds a pickled value other than a dict");
  const tensorsOnly = (value: PickleValue | undefined): value is Map<PickleValue, PickleValue> =>
    value instanceof Map && value.size > 0 && [...value.values()].some((v) => v instanceof PtTensorRef);
  const wrapper = WRAPPER_KEYS.find((key) => tensorsOnly(root.get(key)));
  const stateDict = wrapper !== undefined ? root.get(wrapper) as Map<PickleValue, PickleValue> : root;
  for (const [key, value] of stateDict) {
    if (typeof key !== "string") throw new ClipWeightsError(path, `state dict key ${String(key)} is not a str`);
    if (!(value instanceof PtTensorRef)) continue; // e.g. open_clip_train's `epoch` beside the tensors
    const name = stripModule(key);
    if (out.has(name)) throw new ClipWeightsError(path, `state dict holds '${name}' twice`);
    out.set(name, value);
  }
  if (out.size === 0) {
    const keys = [...root.keys()].slice(0, 12).map(String).join(", ");
    throw new ClipWeightsError(
      path,
      `holds no state dict of tensors (top-level keys: ${keys}; looked under ${WRAPPER_KEYS.join("/")} too)`,
    );
  }
}

/** The TorchScript module tree as state-dict keys: tensor attributes are weights, object attributes submodules. */
function flattenTorchScript(
  object: TorchScriptObject,
  prefix: string,
  out: Map<string, PtTensorRef>,
  seen: Set<TorchScriptObject>,
): void {
  if (seen.has(object)) return; // a shared submodule: its first name wins, as in PyTorch's state_dict
  seen.add(object);
  for (const [name, value] of object.attributes) {
    const key = prefix === "" ? name : `${prefix}.${name}`;
    if (value instanceof PtTensorRef) out.set(key, value);
    else if (value instanceof TorchScriptObject) flattenTorchScript(value, key, out, seen);
  }
}

/** What loadOpenClip did: the model, the file's format and the architecture's origin (a preset or the shapes). */
export interface LoadedOpenClip {
  model: OpenClip;
  format: ClipWeightsFormat;
  /** "--model NAME" or "inferred from the weights' shapes (...)". */
  architecture: string;
}

/**
 * Loads OpenAI/OpenCLIP weights into an OpenClip in eval mode. `model` names a preset (open_clip's names such as
 * ViT-B-32 or ViT-B-32-quickgelu, or OpenAI's ViT-B/32); without it the architecture is read off the shapes, with
 * QuickGELU for a TorchScript archive (OpenAI's) and GELU otherwise, unless `quickGelu` says.
 */
export function loadOpenClip(
  path: string,
  options: { model?: string; quickGelu?: boolean; device?: Device } = {},
): LoadedOpenClip {
  using file = openClipWeights(path);
  let config: OpenClipConfig;
  let architecture: string;
  try {
    if (options.model !== undefined) {
      config = openClipPreset(options.model);
      architecture = `--model ${options.model}`;
    } else {
      const quickGelu = options.quickGelu ?? file.format === "TorchScript archive";
      config = inferOpenClipConfig(file.shapes, { quickGelu });
      architecture = `${config.name}, inferred from the weights' shapes (${
        quickGelu ? "QuickGELU" : "GELU; pass --model NAME-quickgelu for weights trained with QuickGELU"
      })`;
    }
  } catch (error) {
    if (error instanceof OpenClipShapeError) {
      throw new ClipWeightsError(path, `${error.message} (${file.format})`, { cause: error });
    }
    if (options.model !== undefined) throw new ClipWeightsError(path, (error as Error).message);
    throw error;
  }
  const model = new OpenClip(config);
  try {
    checkFit(model, file, config.name);
    noGrad(() => {
      for (const [key, target] of model.stateDict()) {
        using source = file.read(key);
        target.copy_(source);
      }
    });
    if ((options.device ?? "cpu") !== "cpu") model.to(options.device!);
  } catch (error) {
    model.dispose();
    if (error instanceof PtFileError || error instanceof SafeTensorsError || error instanceof PickleError) {
      throw new ClipWeightsError(path, error.message.replace(`${path}: `, ""), { cause: error });
    }
    throw error;
  }
  model.eval();
  return { model, format: file.format, architecture };
}

/** Throws unless every model key is in the file with its shape and the file holds nothing else (bar ignored keys). */
function checkFit(model: OpenClip, file: ClipWeightsFile, name: string): void {
  const own = model.stateDict();
  const missing = [...own.keys()].filter((key) => !file.shapes.has(key));
  const unexpected = [...file.shapes.keys()].filter((key) => !own.has(key));
  const misshaped: string[] = [];
  for (const [key, target] of own) {
    const shape = file.shapes.get(key);
    if (shape === undefined) continue;
    const expected = target.shape;
    if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i])) {
      misshaped.push(`${key} is [${shape.join(", ")}] in the file but [${expected.join(", ")}] in the model`);
    }
  }
  if (missing.length + unexpected.length + misshaped.length === 0) return;
  const list = (what: string, items: string[]): string =>
    items.length === 0
      ? ""
      : `; ${items.length} ${what}: ${items.slice(0, 4).join(", ")}${items.length > 4 ? ", ..." : ""}`;
  throw new ClipWeightsError(
    file.path,
    `the weights (${file.format}) do not fit model '${name}'${list("mis-shaped", misshaped)}` +
      `${list("missing", missing)}${list("unexpected", unexpected)} (pass --model with the right architecture; ` +
      `known: ${openClipPresetNames().join(", ")})`,
  );
}

/**
 * True when `path` holds OpenAI/OpenCLIP-keyed CLIP weights (a `visual.class_embedding` tensor), as opposed to one of
 * our checkpoints or an official DetailCLIP file. Unreadable files answer false (their own loader reports them).
 */
export function isOpenClipWeights(path: string): boolean {
  try {
    using file = openClipWeights(path);
    return file.shapes.has("visual.class_embedding");
  } catch (error) {
    if (error instanceof ClipWeightsError) return false;
    throw error;
  }
}
