// model.ts: a trained model as the evaluation commands see it, rebuilt from a training checkpoint alone: the
// architecture from meta.model_config, the weights from the `model.<official key>` tensors and the tokenizer from
// meta.tokenizer_merges, so evaluating never needs the run's options or data. `ema` selects DetailCLIP's EMA towers
// (what the official eval_zeroshot.py evaluates, docs/evaluation.md#the-official-zero-shot-suite); a plain CLIP has
// none. An official DetailCLIP checkpoint (`.pt`, src/checkpoint/official_checkpoint.ts) works too: its architecture comes
// from args.model (or the `model` option) and, since it carries no tokenizer, text needs the `bpe` option.
import { ClipTokenizer } from "../data/tokenizer.ts";
import { type AnyModel, buildModel } from "../models/build.ts";
import { type ModelConfig, parseModelConfig } from "../models/configs.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import type { MaskVisionTransformer } from "../models/vit.ts";
import type { OpenClip, OpenClipVisionTransformer } from "../models/openclip.ts";
import { OPENAI_MEAN, OPENAI_STD } from "../models/openclip_configs.ts";
import { ClipWeightsError, isOpenClipWeights, loadOpenClip } from "../checkpoint/clip_weights.ts";
import type { Device, Tensor } from "../torch/mod.ts";
import { loadCheckpoint } from "../checkpoint/checkpoint.ts";
import { describeNonFinite, nonFiniteTensors } from "../checkpoint/finite.ts";
import { PtFileError } from "../torch/pt_file.ts";
import {
  isTorchCheckpoint,
  loadOfficialWeights,
  OfficialCheckpointError,
  officialModelConfig,
  openOfficialCheckpoint,
} from "../checkpoint/official_checkpoint.ts";

/** A checkpoint that lacks what evaluation needs, or an option it cannot honour (`--ema` on CLIP). */
export class EvalModelError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "EvalModelError";
  }
}

/** A trained model rebuilt from a checkpoint for evaluation: tokenize, encodeImage, encodeText, its vision tower. */
export interface EvalModel {
  model: AnyModel | OpenClip;
  /** The image normalisation the weights were trained with; absent: ImageNet's (the loader's default). */
  normalize?: { mean: readonly [number, number, number]; std: readonly [number, number, number] };
  tokenizer: ClipTokenizer;
  contextLength: number;
  imageSize: number;
  ema: boolean;
  step: number;
  /** (N, context) int64 token ids on the model's device. */
  tokenize(texts: string[]): Tensor;
  /** (B, 3, H, W) -> (B, E) CLIP image embeddings (CLS through the projection). */
  encodeImage(images: Tensor): Tensor;
  /** (N, context) -> (N, E). */
  encodeText(tokens: Tensor): Tensor;
  /** The vision tower itself (student or EMA), for probes on its features. */
  tower: MaskVisionTransformer | OpenClipVisionTransformer;
  dispose(): void;
}

export interface LoadEvalModelOptions {
  ema?: boolean;
  device?: Device;
  /**
   * A CLIP BPE merges file (e.g. bpe_simple_vocab_16e6.txt.gz). Needed for text with an official `.pt`, which
   * carries no tokenizer; for our checkpoints it replaces the stored merges (the vocabulary must match the model).
   */
  bpe?: string;
  /** The model preset of an official `.pt` (default: its args.model); our checkpoints carry their own config. */
  model?: string;
}

/** Loads `path`, rebuilds its model in eval mode on `device` and checks every weight was present (strict). */
export function loadEvalModel(path: string, options: LoadEvalModelOptions = {}): EvalModel {
  const device = options.device ?? "cpu";
  const tokenizer = options.bpe === undefined ? null : readTokenizer(options.bpe);
  if (isOpenClipWeights(path)) return loadOpenClipEvalModel(path, options, tokenizer);
  if (isTorchCheckpoint(path)) {
    try {
      return loadOfficialEvalModel(path, options, tokenizer);
    } catch (error) {
      // An unreadable or mismatched official file is the user's input, reported like any other checkpoint problem.
      if (error instanceof PtFileError || error instanceof OfficialCheckpointError) {
        throw new EvalModelError(error.message, { cause: error });
      }
      throw error;
    }
  }
  const checkpoint = loadCheckpoint(path, { device });
  try {
    const config = parseModelConfig(checkpoint.meta.model_config, `${path} meta.model_config`);
    if (options.model !== undefined && options.model !== config.name) {
      throw new EvalModelError(
        `${path}: --model ${options.model} applies to official .pt checkpoints; this one carries its own ` +
          `architecture (${config.name})`,
      );
    }
    const merges = checkpoint.meta.tokenizer_merges;
    if (tokenizer === null && (!Array.isArray(merges) || !merges.every((m) => typeof m === "string"))) {
      throw new EvalModelError(`${path}: meta.tokenizer_merges is missing or not a list of strings`);
    }
    const model = buildChecked(config, options, path);
    const weights = new Map<string, Tensor>();
    for (const [key, tensor] of checkpoint.tensors) if (key.startsWith("model.")) weights.set(key.slice(6), tensor);
    try {
      model.loadStateDict(weights, { where: path });
    } catch (error) {
      model.dispose();
      throw error;
    }
    return evalModel(model, tokenizer ?? new ClipTokenizer(merges as string[]), options, checkpoint.step, path);
  } finally {
    for (const tensor of checkpoint.tensors.values()) tensor.dispose();
  }
}

/** An official DetailCLIP checkpoint (or a plain state-dict `.pt`): architecture from args.model or `model`. */
function loadOfficialEvalModel(
  path: string,
  options: LoadEvalModelOptions,
  tokenizer: ClipTokenizer | null,
): EvalModel {
  using checkpoint = openOfficialCheckpoint(path);
  const config = officialModelConfig(checkpoint, { model: options.model, vocab: tokenizer?.vocabSize });
  const model = buildChecked(config, options, path);
  try {
    loadOfficialWeights(model, checkpoint, { modelName: config.name, device: options.device });
    // Our checkpoints are scanned as they load (loadCheckpoint); an official file is checked here, on the device.
    const weights = model.stateDict();
    const bad = nonFiniteTensors(weights);
    if (bad.length > 0) {
      throw new EvalModelError(`${path}: ${describeNonFinite(bad, weights.size)}; evaluating it would give NaN`);
    }
  } catch (error) {
    model.dispose();
    throw error;
  }
  return evalModel(model, tokenizer, options, 0, path);
}

/** OpenAI/OpenCLIP weights (src/checkpoint/clip_weights.ts), with OpenAI's image normalisation and no tokenizer of their own. */
function loadOpenClipEvalModel(
  path: string,
  options: LoadEvalModelOptions,
  tokenizer: ClipTokenizer | null,
): EvalModel {
  if (options.ema) {
    throw new EvalModelError(`${path}: --ema needs a DetailCLIP checkpoint, this one is OpenAI/OpenCLIP`);
  }
  const device = options.device ?? "cpu";
  let model: OpenClip;
  try {
    model = loadOpenClip(path, { model: options.model, device }).model;
  } catch (error) {
    if (error instanceof ClipWeightsError) throw new EvalModelError(error.message, { cause: error });
    throw error;
  }
  const { config } = model;
  if (tokenizer !== null && tokenizer.vocabSize > config.text.vocab) {
    model.dispose();
    throw new EvalModelError(
      `--bpe ${options.bpe}: its vocabulary has ${tokenizer.vocabSize} tokens, more than the model's ${config.text.vocab}`,
    );
  }
  const needTokenizer = (): ClipTokenizer => {
    if (tokenizer === null) {
      throw new EvalModelError(
        `${path} holds OpenAI/OpenCLIP weights, which carry no tokenizer: pass --bpe with OpenAI's ` +
          "bpe_simple_vocab_16e6.txt.gz (`deno task data openai-bpe --out bpe_simple_vocab_16e6.txt.gz` writes it)",
      );
    }
    return tokenizer;
  };
  return {
    model,
    normalize: { mean: OPENAI_MEAN, std: OPENAI_STD },
    get tokenizer(): ClipTokenizer {
      return needTokenizer();
    },
    contextLength: config.text.context,
    imageSize: config.vision.imageSize,
    ema: false,
    step: 0,
    tokenize: (texts: string[]): Tensor => {
      const ids = needTokenizer().tokenize(texts, config.text.context);
      if (device === "cpu") return ids;
      using _host = ids;
      return ids.to({ device });
    },
    encodeImage: (images: Tensor): Tensor => model.encodeImage(images),
    encodeText: (tokens: Tensor): Tensor => model.encodeText(tokens),
    tower: model.visual,
    dispose: (): void => model.dispose(),
  };
}

function readTokenizer(bpe: string): ClipTokenizer {
  try {
    return ClipTokenizer.fromFile(bpe);
  } catch (error) {
    throw new EvalModelError(`--bpe ${bpe}: ${(error as Error).message}`);
  }
}

/** The model of `config` on the device, after the checks that need no weights. */
function buildChecked(config: ModelConfig, options: LoadEvalModelOptions, path: string): AnyModel {
  if (options.ema && config.kind !== "detailclip") {
    throw new EvalModelError(`${path}: --ema needs a DetailCLIP checkpoint, this one is ${config.kind}`);
  }
  const model = buildModel(config);
  const device = options.device ?? "cpu";
  if (device !== "cpu") model.to(device);
  return model;
}

/** The evaluation view of a loaded model; `tokenizer` null means text needs --bpe (an official checkpoint). */
function evalModel(
  model: AnyModel,
  tokenizer: ClipTokenizer | null,
  options: LoadEvalModelOptions,
  step: number,
  path: string,
): EvalModel {
  const ema = options.ema ?? false;
  const device = options.device ?? "cpu";
  const config = model.config;
  if (options.bpe !== undefined && tokenizer !== null && tokenizer.vocabSize > config.text.vocab) {
    model.dispose();
    throw new EvalModelError(
      `--bpe ${options.bpe}: its vocabulary has ${tokenizer.vocabSize} tokens, more than the model's ` +
        `${config.text.vocab}`,
    );
  }
  model.eval();
  const contextLength = config.text.context;
  const tower = model instanceof DetailCLIP && ema ? model.visual_ema : model.visual;
  const needTokenizer = (): ClipTokenizer => {
    if (tokenizer === null) {
      throw new EvalModelError(
        `${path} is an official checkpoint and carries no tokenizer: pass --bpe with its BPE merges file ` +
          "(OpenAI's bpe_simple_vocab_16e6.txt.gz for the released models; " +
          "`deno task data openai-bpe --out bpe_simple_vocab_16e6.txt.gz` writes it)",
      );
    }
    return tokenizer;
  };
  return {
    model,
    get tokenizer(): ClipTokenizer {
      return needTokenizer();
    },
    contextLength,
    imageSize: config.vision.imageSize,
    ema,
    step,
    tokenize: (texts: string[]): Tensor => {
      const ids = needTokenizer().tokenize(texts, contextLength);
      return device === "cpu" ? ids : ids.to({ device });
    },
    encodeImage: (images: Tensor): Tensor =>
      model instanceof DetailCLIP ? model.encodeImage(images, { ema }) : model.encodeImage(images),
    encodeText: (tokens: Tensor): Tensor =>
      model instanceof DetailCLIP ? model.encodeText(tokens, { ema }) : model.encodeText(tokens),
    tower,
    dispose: (): void => model.dispose(),
  };
}
