// openclip.ts: OpenAI's CLIP with a ViT image tower, as OpenAI released it and as open_clip builds it (open_clip's
// model.py CLIP + transformer.py VisionTransformer with the default options), from the same layers as our towers.
// Member names and registration order follow open_clip's state dict, so its weights (and OpenAI's, whose keys are the
// same) load key for key (src/checkpoint/clip_weights.ts). Differences from our timm-style ViT (src/models/vit.ts): a
// bias-free patch conv `conv1`, `class_embedding`/`positional_embedding` without a batch dim, `ln_pre` before the
// blocks, CLIP's packed-attention blocks (`in_proj`/`out_proj`, `c_fc`/`c_proj`), eps 1e-5, and `ln_post` on the pooled
// class token before `proj`. Inference only: no initialisation scheme beyond shapes (weights always come from a file).
import { Conv2d, Embedding, LayerNorm, Module } from "../nn/mod.ts";
import { cat, Tensor, tidy } from "../torch/mod.ts";
import type { OpenClipConfig } from "./openclip_configs.ts";
import { causalMask, encodeText, TextTransformer } from "./text.ts";

/** OpenAI's VisionTransformer (open_clip's with its defaults: class-token pooling, no patch dropout, no attn pool). */
export class OpenClipVisionTransformer extends Module {
  readonly imageSize: number;
  readonly patchSize: number;
  readonly width: number;
  readonly class_embedding: Tensor; // (D)
  readonly positional_embedding: Tensor; // (1 + L, D)
  readonly proj: Tensor; // (D, E)
  readonly conv1: Conv2d;
  readonly ln_pre: LayerNorm;
  readonly transformer: TextTransformer; // the same pre-norm blocks as the text tower, without a mask
  readonly ln_post: LayerNorm;

  constructor(config: OpenClipConfig) {
    super();
    const { imageSize, patchSize, width, layers, heads, mlpWidth } = config.vision;
    this.imageSize = imageSize;
    this.patchSize = patchSize;
    this.width = width;
    const grid = imageSize / patchSize;
    const activation = config.quickGelu ? "quick_gelu" : "gelu";
    this.class_embedding = this.parameter("class_embedding", Tensor.zeros([width]));
    this.positional_embedding = this.parameter("positional_embedding", Tensor.zeros([1 + grid * grid, width]));
    this.proj = this.parameter("proj", Tensor.zeros([width, config.embedDim]));
    this.conv1 = this.module("conv1", new Conv2d(3, width, patchSize, patchSize, { bias: false }));
    this.ln_pre = this.module("ln_pre", new LayerNorm(width, { eps: 1e-5 }));
    this.transformer = this.module("transformer", new TextTransformer({ width, layers, heads, activation, mlpWidth }));
    this.ln_post = this.module("ln_post", new LayerNorm(width, { eps: 1e-5 }));
  }

  /** x: (B, 3, H, W) -> tokens (B, 1 + L, D) after the last block (before ln_post). */
  forwardTokens(x: Tensor): Tensor {
    const [b, channels, h, w] = x.shape;
    if (x.ndim !== 4 || channels !== 3 || h !== this.imageSize || w !== this.imageSize) {
      throw new Error(
        `OpenClipVisionTransformer: expected images (B, 3, ${this.imageSize}, ${this.imageSize}), got (${x.shape})`,
      );
    }
    return tidy(() => {
      const d = this.width;
      const patches = this.conv1.forward(x).flatten(2).transpose(1, 2); // patches: (B, L, D)
      const cls = this.class_embedding.view([1, 1, d]).expand([b, 1, d]); // cls: (B, 1, D)
      const tokens = cat([cls, patches], 1).add(this.positional_embedding); // tokens: (B, 1 + L, D)
      return this.transformer.forward(this.ln_pre.forward(tokens), null); // (B, 1 + L, D)
    });
  }

  /** x: (B, 3, H, W) -> tokens (B, 1 + L, D) after ln_post (open_clip normalises every token before pooling). */
  forwardFeatures(x: Tensor): { tokens: Tensor } {
    return { tokens: tidy(() => this.ln_post.forward(this.forwardTokens(x))) };
  }

  /** x: (B, 3, H, W) -> (B, E): ln_post on the class token, then proj. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const tokens = this.forwardTokens(x); // tokens: (B, 1 + L, D)
      return this.ln_post.forward(tokens.select(1, 0)).matmul(this.proj); // (B, E)
    });
  }
}

/** The OpenAI/OpenCLIP CLIP architecture, for evaluating released OpenAI and OpenCLIP weights. */
export class OpenClip extends Module {
  readonly config: OpenClipConfig;
  readonly positional_embedding: Tensor; // (context, textWidth)
  readonly text_projection: Tensor; // (textWidth, E)
  readonly logit_scale: Tensor; // ()
  readonly visual: OpenClipVisionTransformer;
  readonly transformer: TextTransformer;
  readonly token_embedding: Embedding;
  readonly ln_final: LayerNorm;
  /** (context, context) additive causal mask; open_clip's non-persistent attn_mask buffer, so not state. */
  readonly #textMask: Tensor;

  constructor(config: OpenClipConfig) {
    super();
    this.config = config;
    const { text, embedDim } = config;
    const activation = config.quickGelu ? "quick_gelu" : "gelu";
    this.positional_embedding = this.parameter("positional_embedding", Tensor.zeros([text.context, text.width]));
    this.text_projection = this.parameter("text_projection", Tensor.zeros([text.width, embedDim]));
    this.logit_scale = this.parameter("logit_scale", Tensor.scalar(Math.log(1 / 0.07)));
    this.visual = this.module("visual", new OpenClipVisionTransformer(config));
    this.transformer = this.module(
      "transformer",
      new TextTransformer({
        width: text.width,
        layers: text.layers,
        heads: text.heads,
        activation,
        mlpWidth: text.mlpWidth,
      }),
    );
    this.token_embedding = this.module("token_embedding", new Embedding(text.vocab, text.width));
    this.ln_final = this.module("ln_final", new LayerNorm(text.width, { eps: 1e-5 }));
    this.#textMask = causalMask(text.context).keep();
  }

  /** (B, 3, H, W) -> (B, E), not normalised (open_clip's encode_image). */
  encodeImage(images: Tensor): Tensor {
    return this.visual.forward(images);
  }

  /** (B, context) int64 -> (B, E), pooled at the EOT token (the largest id), not normalised (encode_text). */
  encodeText(tokens: Tensor): Tensor {
    return encodeText({
      tokenEmbedding: this.token_embedding,
      positionalEmbedding: this.positional_embedding,
      transformer: this.transformer,
      lnFinal: this.ln_final,
      projection: this.text_projection,
      mask: this.#textMask,
    }, tokens);
  }

  override dispose(): void {
    super.dispose();
    this.#textMask.dispose();
  }
}
