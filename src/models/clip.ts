// clip.ts: a plain CLIP: the student towers, projections and temperature, in the official registration order and
// with the official initialisation (docs/model.md: vision encoder, text encoder, projections). DetailCLIP extends it
// with the teacher, decoder and iBOT heads, so CLIP baselines have exactly DetailCLIP's student (the same steps and
// data without the other terms).
import { Embedding, LayerNorm, Module } from "../nn/mod.ts";
import { noGrad, Tensor } from "../torch/mod.ts";
import type { ClipConfig, TextConfig, VisionConfig } from "./configs.ts";

/** What the shared towers need from a config (ClipConfig and DetailClipConfig both have it). */
export interface TowerConfig {
  embedDim: number;
  vision: VisionConfig;
  text: TextConfig;
}
import { causalMask, encodeText, initTextTransformer, TextTransformer } from "./text.ts";
import { MaskVisionTransformer } from "./vit.ts";

/** CLIP: a ViT image tower and a text transformer projected into one embedding space. */
export class CLIP extends Module {
  readonly config: ClipConfig | TowerConfig;
  readonly visual: MaskVisionTransformer;
  readonly transformer: TextTransformer;
  readonly token_embedding: Embedding;
  readonly positional_embedding: Tensor; // (context, textWidth)
  readonly ln_final: LayerNorm;
  readonly image_projection: Tensor; // (visionWidth, E)
  readonly text_projection: Tensor; // (textWidth, E)
  readonly logit_scale: Tensor; // ()
  /** (context, context) additive causal mask; an attribute, not state (as in the official model). */
  protected readonly textMask: Tensor;

  constructor(config: ClipConfig | TowerConfig) {
    super();
    this.config = config;
    const { vision, text, embedDim } = config;
    this.visual = this.module("visual", new MaskVisionTransformer(vision));
    this.transformer = this.module("transformer", new TextTransformer(text));
    this.token_embedding = this.module("token_embedding", new Embedding(text.vocab, text.width));
    this.positional_embedding = this.parameter("positional_embedding", Tensor.empty([text.context, text.width]));
    this.ln_final = this.module("ln_final", new LayerNorm(text.width, { eps: 1e-5, castToFloat32: true }));
    this.image_projection = this.parameter("image_projection", Tensor.empty([vision.width, embedDim]));
    this.text_projection = this.parameter("text_projection", Tensor.empty([text.width, embedDim]));
    this.logit_scale = this.parameter("logit_scale", Tensor.scalar(Math.log(1 / 0.07)));
    this.textMask = causalMask(text.context).keep();
    noGrad(() => {
      this.token_embedding.weight.normal_(0, 0.02);
      this.positional_embedding.normal_(0, 0.01);
      initTextTransformer(this.transformer, text.width, text.layers);
      this.image_projection.normal_(0, vision.width ** -0.5);
      this.text_projection.normal_(0, text.width ** -0.5);
    });
  }

  /** (B, 3, H, W) -> (B, E) from the CLS token over all patches. */
  encodeImage(images: Tensor, options: { ema?: boolean } = {}): Tensor {
    if (options.ema) throw new Error("encodeImage: a plain CLIP has no EMA towers");
    const { tokens } = this.visual.forwardFeatures(images, {}); // (B, 1+L, D)
    return tokens.select(1, 0).matmul(this.image_projection); // (B, E)
  }

  /** (B, context) int64 -> (B, E). */
  encodeText(tokens: Tensor, options: { ema?: boolean } = {}): Tensor {
    if (options.ema) throw new Error("encodeText: a plain CLIP has no EMA towers");
    return encodeText({
      tokenEmbedding: this.token_embedding,
      positionalEmbedding: this.positional_embedding,
      transformer: this.transformer,
      lnFinal: this.ln_final,
      projection: this.text_projection,
      mask: this.textMask,
    }, tokens);
  }

  /** One contrastive forward: embeddings of images and captions plus exp(logit_scale). */
  forward(images: Tensor, text: Tensor): { imageEmbed: Tensor; textEmbed: Tensor; logitScale: Tensor } {
    return {
      imageEmbed: this.encodeImage(images),
      textEmbed: this.encodeText(text),
      logitScale: this.logit_scale.exp(),
    };
  }

  clampLogitScale(): void {
    noGrad(() => this.logit_scale.clamp_(0, Math.log(100)));
  }

  override dispose(): void {
    super.dispose();
    this.textMask.dispose();
  }
}
