// vit.ts: the vision encoder, timm 0.5.4's VisionTransformer as DetailCLIP's MaskVisionTransformer uses it (student
// and EMA teacher alike, docs/model.md#vision-encoder): a frozen random patch conv, learned cls/pos embeddings,
// pre-norm blocks and a final LayerNorm on every token. Token removal is not decided here: the caller passes the
// indices of the patches to keep. The teacher's CLS attention is accumulated as a running sum of CLS rows, never as
// full maps (docs/parity.md#teacher-attention-memory).
import { Block } from "../nn/block.ts";
import { activeCheckpoints } from "../nn/checkpoint.ts";
import { Conv2d } from "../nn/conv.ts";
import { LayerNorm } from "../nn/layer_norm.ts";
import { Module } from "../nn/module.ts";
import { ModuleList } from "../nn/module_list.ts";
import { cat, kernelsCompiled, Tensor, tidy } from "../torch/mod.ts";

export interface VisionTransformerConfig {
  imageSize: number;
  patchSize: number;
  width: number;
  depth: number;
  heads: number;
  mlpRatio?: number;
}

/** timm's PatchEmbed: one stride-P convolution, flattened to tokens in raster order (index = row * G + col). */
export class PatchEmbed extends Module {
  readonly proj: Conv2d;

  constructor(patchSize: number, width: number) {
    super();
    this.proj = this.module("proj", new Conv2d(3, width, patchSize, patchSize));
  }

  /** x: (B, 3, H, W) -> (B, L, D). */
  forward(x: Tensor): Tensor {
    return tidy(() => this.proj.forward(x).flatten(2).transpose(1, 2)); // (B, D, G, G) -> (B, G*G, D)
  }
}

export interface ForwardFeaturesOptions {
  /** (B, K) int64 indices of the patches to keep, raster order; all patches when omitted. */
  keep?: Tensor;
  /** Also return the mean CLS-query attention to the patch tokens (over all layers and heads), detached. */
  collectClsAttention?: boolean;
}

/** The ViT image tower, with iBOT masking and token selection for DetailCLIP's views. */
export class MaskVisionTransformer extends Module {
  readonly imageSize: number;
  readonly patchSize: number;
  readonly width: number;
  readonly depth: number;
  readonly heads: number;
  readonly cls_token: Tensor; // (1, 1, D)
  readonly pos_embed: Tensor; // (1, 1 + L, D)
  readonly patch_embed: PatchEmbed;
  readonly blocks: ModuleList<Block>;
  readonly norm: LayerNorm;

  constructor(config: VisionTransformerConfig) {
    super();
    const { imageSize, patchSize, width, depth, heads, mlpRatio = 4 } = config;
    if (imageSize % patchSize !== 0) {
      throw new Error(`MaskVisionTransformer: image size ${imageSize} is not a multiple of patch size ${patchSize}`);
    }
    this.imageSize = imageSize;
    this.patchSize = patchSize;
    this.width = width;
    this.depth = depth;
    this.heads = heads;
    // Construction follows timm's __init__ (patch conv, then the blocks' default Linear draws, then init_weights),
    // so a seeded build draws the generator in timm's order; registration follows timm's state dict (parameters
    // of the module itself first, then patch_embed, blocks, norm).
    const patchEmbed = new PatchEmbed(patchSize, width);
    this.cls_token = this.parameter("cls_token", Tensor.zeros([1, 1, width]));
    this.pos_embed = this.parameter("pos_embed", Tensor.zeros([1, 1 + this.numPatches, width]));
    this.patch_embed = this.module("patch_embed", patchEmbed);
    const blocks = Array.from({ length: depth }, () => new Block(width, heads, { mlpRatio, eps: 1e-6 }));
    this.blocks = this.module("blocks", new ModuleList(blocks));
    this.norm = this.module("norm", new LayerNorm(width, { eps: 1e-6 }));
    this.#initWeights();
    // The MoCo-v3 trick inherited from A-CLIP: the patch projection stays at its random init
    // (docs/model.md#vision-encoder).
    this.patch_embed.proj.weight.requiresGrad_(false);
    this.patch_embed.proj.bias!.requiresGrad_(false);
  }

  /** timm 0.5.4 init_weights(mode=''): pos then cls trunc_normal(.02, ±2 absolute); Linear trunc_normal(.02) with
   * zero bias in module order; LayerNorm 1/0 (already so); the conv keeps PyTorch's default. */
  #initWeights(): void {
    this.pos_embed.truncNormal_(0, 0.02, -2, 2);
    this.cls_token.truncNormal_(0, 0.02, -2, 2);
    for (const block of this.blocks) {
      for (const linear of [block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2]) {
        linear.weight.truncNormal_(0, 0.02, -2, 2);
        linear.bias?.zero_();
      }
    }
  }

  /** Patches per side. */
  get gridSize(): number {
    return this.imageSize / this.patchSize;
  }

  /** L = gridSize². */
  get numPatches(): number {
    return this.gridSize * this.gridSize;
  }

  /**
   * x: (B, 3, H, W) -> tokens (B, 1 + K, D) after the final norm (K = L, or the number of kept patches), and, when
   * asked, clsAttention (B, K): (1 / (depth * heads)) Σ_l Σ_h A_l[b, h, 0, 1 + j]
   * (docs/model.md#attention-guided-token-removal, step 1), detached.
   */
  forwardFeatures(x: Tensor, options: ForwardFeaturesOptions = {}): { tokens: Tensor; clsAttention: Tensor | null } {
    const { keep, collectClsAttention = false } = options;
    const [b, channels, h, w] = x.shape;
    if (channels !== 3 || h !== this.imageSize || w !== this.imageSize) {
      throw new Error(
        `MaskVisionTransformer: expected images (B, 3, ${this.imageSize}, ${this.imageSize}), got (${x.shape})`,
      );
    }
    return tidy(() => {
      const d = this.width;
      let patches = this.patch_embed.forward(x).add(this.pos_embed.slice(1, 1)); // patches: (B, L, D)
      if (keep !== undefined) {
        const [kb, k] = keep.shape;
        if (kb !== b || keep.ndim !== 2) {
          throw new Error(`forwardFeatures: keep must be (${b}, K), got (${keep.shape})`);
        }
        const index = keep.unsqueeze(-1).expand([b, k, d]); // index: (B, K, D)
        patches = patches.gather(1, index); // patches: (B, K, D)
      }
      const cls = this.cls_token.add(this.pos_embed.narrow(1, 0, 1)).expand([b, 1, d]); // cls: (B, 1, D)
      let tokens = cat([cls, patches], 1); // tokens: (B, 1 + K, D)
      let attentionSum: Tensor | null = null; // attentionSum: (B, K)
      // CUDA: one fused kernel per layer adds the head sum into a float32 running sum
      // (docs/parity.md#teacher-attention-memory); the CPU keeps the libtorch composition below, whose arithmetic the
      // golden masks were checked against.
      const fused = collectClsAttention && x.device !== "cpu" && kernelsCompiled();
      if (fused) attentionSum = Tensor.zeros([b, tokens.size(1) - 1], { dtype: "float32", device: x.device });
      // --grad-checkpointing: the blocks' activations are recomputed in backward (src/nn/checkpoint.ts). The final norm
      // is the stack's last layer, so that its backward runs once on the sum of its consumers' gradients (the CLIP and
      // iBOT heads in the loss's backward, the decoder in its own), as it does without checkpointing.
      const checkpoints = collectClsAttention ? null : activeCheckpoints();
      const blocks = checkpoints === null ? [...this.blocks] : [];
      if (checkpoints !== null) {
        const layers = [...this.blocks].map((b) => (h: Tensor) => b.forward(h));
        const normed = checkpoints.sequential(tokens, [...layers, (h) => this.norm.forward(h)]); // (B, 1 + K, D)
        return { tokens: normed, clsAttention: null };
      }
      for (const block of blocks) {
        let next: Tensor;
        if (fused) {
          next = block.forwardAccumulatingClsAttention(tokens, attentionSum as Tensor);
        } else if (collectClsAttention) {
          const { out, clsAttention } = block.forwardWithClsAttention(tokens); // clsAttention: (B, H, 1 + K)
          const layerSum = clsAttention.detach().slice(2, 1).sum(1); // layerSum: (B, K), summed over heads
          clsAttention.dispose();
          if (attentionSum === null) {
            attentionSum = layerSum;
          } else {
            const total: Tensor = attentionSum.add(layerSum);
            attentionSum.dispose();
            layerSum.dispose();
            attentionSum = total;
          }
          next = out;
        } else {
          next = block.forward(tokens);
        }
        // Free each block's input as soon as the next exists: under no_grad (the teacher) nothing else holds it.
        tokens.dispose();
        tokens = next;
      }
      const normed = this.norm.forward(tokens); // normed: (B, 1 + K, D)
      const clsAttention = attentionSum === null ? null : attentionSum.div(this.depth * this.heads);
      return { tokens: normed, clsAttention };
    });
  }
}
