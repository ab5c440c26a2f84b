// clip_encoder.ts: any checkpoint the project reads as one image/text encoder: OpenAI/OpenCLIP weights
// (src/checkpoint/clip_weights.ts: safetensors, torch.save state dicts, OpenAI's TorchScript archives), our training
// checkpoints and official DetailCLIP `.pt` files (src/eval/model.ts). It carries what a caller needs to feed it: the
// image size, the normalisation the weights were trained with (OpenAI's for OpenAI/OpenCLIP, ImageNet's for
// DetailCLIP) and a tokenizer at the model's context length.
import { IMAGENET_MEAN, IMAGENET_STD } from "../data/synthetic.ts";
import { ClipTokenizer } from "../data/tokenizer.ts";
import { OPENAI_MEAN, OPENAI_STD } from "../models/openclip_configs.ts";
import type { Device, Tensor } from "../torch/mod.ts";
import { isOpenClipWeights, loadOpenClip } from "../checkpoint/clip_weights.ts";
import { EvalModelError, loadEvalModel } from "./model.ts";

/** Any checkpoint the project reads, as one image/text encoder with its image size, normalisation and tokenizer. */
export interface ClipEncoder {
  /** What was loaded, for logs: e.g. "OpenCLIP ViT-B-32 (safetensors; ...)" or "DetailCLIP_VITB16 checkpoint". */
  description: string;
  imageSize: number;
  contextLength: number;
  normalize: { mean: readonly [number, number, number]; std: readonly [number, number, number] };
  /** (N, context) int64 token ids on the model's device; throws when no tokenizer is known (pass `bpe`). */
  tokenize(texts: string[]): Tensor;
  /** (B, 3, S, S) normalised images -> (B, E), not L2-normalised. */
  encodeImage(images: Tensor): Tensor;
  /** (N, context) -> (N, E), not L2-normalised. */
  encodeText(tokens: Tensor): Tensor;
  /** exp(logit_scale): the factor on cosine similarities in the contrastive logits. */
  logitScale(): number;
  dispose(): void;
}

export interface LoadClipEncoderOptions {
  /** An architecture: an OpenAI/OpenCLIP name (ViT-B-32, ViT-B/32, ...) or, for official .pt files, our preset. */
  model?: string;
  /** A CLIP BPE merges file; OpenAI/OpenCLIP weights and official .pt files carry none. */
  bpe?: string;
  device?: Device;
  /** DetailCLIP's EMA towers. */
  ema?: boolean;
}

/** Loads OpenAI/OpenCLIP weights, one of our checkpoints or an official DetailCLIP `.pt` as a ClipEncoder. */
export function loadClipEncoder(path: string, options: LoadClipEncoderOptions = {}): ClipEncoder {
  const device = options.device ?? "cpu";
  if (isOpenClipWeights(path)) {
    if (options.ema) throw new EvalModelError(`${path}: --ema needs a DetailCLIP checkpoint, this one is OpenCLIP`);
    let tokenizer: ClipTokenizer | null = null;
    if (options.bpe !== undefined) {
      try {
        tokenizer = ClipTokenizer.fromFile(options.bpe);
      } catch (error) {
        throw new EvalModelError(`--bpe ${options.bpe}: ${(error as Error).message}`);
      }
    }
    const { model, format, architecture } = loadOpenClip(path, { model: options.model, device });
    const { config } = model;
    if (tokenizer !== null && tokenizer.vocabSize > config.text.vocab) {
      model.dispose();
      throw new EvalModelError(
        `--bpe ${options.bpe}: its vocabulary has ${tokenizer.vocabSize} tokens, more than the model's ` +
          `${config.text.vocab}`,
      );
    }
    return {
      description: `OpenAI/OpenCLIP ${config.name} (${format}; ${architecture})`,
      imageSize: config.vision.imageSize,
      contextLength: config.text.context,
      normalize: { mean: OPENAI_MEAN, std: OPENAI_STD },
      tokenize: (texts: string[]): Tensor => {
        if (tokenizer === null) {
          throw new EvalModelError(
            `${path} carries no tokenizer: pass --bpe with OpenAI's bpe_simple_vocab_16e6.txt.gz ` +
              "(`deno task data openai-bpe --out bpe_simple_vocab_16e6.txt.gz` writes it)",
          );
        }
        const ids = tokenizer.tokenize(texts, config.text.context);
        if (device === "cpu") return ids;
        using _host = ids;
        return ids.to({ device });
      },
      encodeImage: (images: Tensor): Tensor => model.encodeImage(images),
      encodeText: (tokens: Tensor): Tensor => model.encodeText(tokens),
      logitScale: (): number => Math.exp(model.logit_scale.item()),
      dispose: (): void => model.dispose(),
    };
  }
  const loaded = loadEvalModel(path, { bpe: options.bpe, model: options.model, device, ema: options.ema });
  return {
    description: `${"name" in loaded.model.config ? loaded.model.config.name : loaded.model.constructor.name} (${
      loaded.ema ? "EMA towers" : "student towers"
    })`,
    imageSize: loaded.imageSize,
    contextLength: loaded.contextLength,
    normalize: { mean: IMAGENET_MEAN, std: IMAGENET_STD },
    tokenize: (texts: string[]): Tensor => loaded.tokenize(texts),
    encodeImage: (images: Tensor): Tensor => loaded.encodeImage(images),
    encodeText: (tokens: Tensor): Tensor => loaded.encodeText(tokens),
    logitScale: (): number => Math.exp(loaded.model.logit_scale.item()),
    dispose: (): void => loaded.dispose(),
  };
}
