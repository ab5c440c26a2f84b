// model.ts: a trained model as the evaluation commands see it, rebuilt from a training checkpoint alone: the
// architecture from meta.model_config, the weights from the `model.<official key>` tensors and the tokenizer from
// meta.tokenizer_merges, so evaluating never needs the run's options or data. `ema` selects DetailCLIP's EMA towers
// (what the official eval_zeroshot.py evaluates, SPEC §7.2); a plain CLIP has none.
import { ClipTokenizer } from "../data/tokenizer.ts";
import { type AnyModel, buildModel } from "../models/build.ts";
import { parseModelConfig } from "../models/configs.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import type { MaskVisionTransformer } from "../models/vit.ts";
import type { Device, Tensor } from "../torch/mod.ts";
import { loadCheckpoint } from "../train/checkpoint.ts";

/** A checkpoint that lacks what evaluation needs, or an option it cannot honour (`--ema` on CLIP). */
export class EvalModelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EvalModelError";
  }
}

export interface EvalModel {
  model: AnyModel;
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
  tower: MaskVisionTransformer;
  dispose(): void;
}

/** Loads `path`, rebuilds its model in eval mode on `device` and checks every weight was present (strict). */
export function loadEvalModel(path: string, options: { ema?: boolean; device?: Device } = {}): EvalModel {
  const ema = options.ema ?? false;
  const device = options.device ?? "cpu";
  const checkpoint = loadCheckpoint(path, { device });
  try {
    const config = parseModelConfig(checkpoint.meta.model_config, `${path} meta.model_config`);
    const merges = checkpoint.meta.tokenizer_merges;
    if (!Array.isArray(merges) || !merges.every((m) => typeof m === "string")) {
      throw new EvalModelError(`${path}: meta.tokenizer_merges is missing or not a list of strings`);
    }
    if (ema && config.kind !== "detailclip") {
      throw new EvalModelError(`${path}: --ema needs a DetailCLIP checkpoint, this one is ${config.kind}`);
    }
    const tokenizer = new ClipTokenizer(merges);
    const model = buildModel(config);
    if (device !== "cpu") model.to(device);
    const weights = new Map<string, Tensor>();
    for (const [key, tensor] of checkpoint.tensors) if (key.startsWith("model.")) weights.set(key.slice(6), tensor);
    model.loadStateDict(weights, { where: path });
    model.eval();
    const contextLength = config.text.context;
    const tower = model instanceof DetailCLIP && ema ? model.visual_ema : model.visual;
    return {
      model,
      tokenizer,
      contextLength,
      imageSize: config.vision.imageSize,
      ema,
      step: checkpoint.step,
      tokenize: (texts: string[]): Tensor => {
        const ids = tokenizer.tokenize(texts, contextLength);
        return device === "cpu" ? ids : ids.to({ device });
      },
      encodeImage: (images: Tensor): Tensor =>
        model instanceof DetailCLIP ? model.encodeImage(images, { ema }) : model.encodeImage(images),
      encodeText: (tokens: Tensor): Tensor =>
        model instanceof DetailCLIP ? model.encodeText(tokens, { ema }) : model.encodeText(tokens),
      tower,
      dispose: (): void => model.dispose(),
    };
  } finally {
    for (const tensor of checkpoint.tensors.values()) tensor.dispose();
  }
}
