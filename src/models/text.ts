// text.ts: the OpenAI-CLIP text tower (docs/model.md#text-encoder): causal pre-norm blocks over token + positional
// embeddings, the final LayerNorm, pooling at the EOT token (argmax of the ids) and a bias-free projection. The
// embedding tables, ln_final and the projection belong to the assembling model (the EMA teacher shares the first three
// with the student), so encodeText takes them as parts rather than owning them.
import type { Activation } from "../nn/activation.ts";
import type { Embedding } from "../nn/embedding.ts";
import type { LayerNorm } from "../nn/layer_norm.ts";
import { activeCheckpoints } from "../nn/checkpoint.ts";
import { Module } from "../nn/module.ts";
import { ModuleList } from "../nn/module_list.ts";
import { ResidualAttentionBlock } from "../nn/residual_attention_block.ts";
import { Tensor, tidy } from "../torch/mod.ts";

export interface TextTransformerConfig {
  width: number;
  layers: number;
  heads: number;
  /** QuickGELU (OpenAI's, the default) or GELU (OpenCLIP's own models; src/models/openclip.ts). */
  activation?: Activation;
  /** The MLP's hidden width (default 4 · width). */
  mlpWidth?: number;
}

/** CLIP's causal text transformer (token and position embeddings, blocks, final layer norm). */
export class TextTransformer extends Module {
  readonly width: number;
  readonly layers: number;
  readonly heads: number;
  readonly resblocks: ModuleList<ResidualAttentionBlock>;

  constructor(config: TextTransformerConfig) {
    super();
    const { width, layers, heads, activation, mlpWidth } = config;
    this.width = width;
    this.layers = layers;
    this.heads = heads;
    const blocks = Array.from(
      { length: layers },
      () => new ResidualAttentionBlock(width, heads, { activation, mlpWidth }),
    );
    this.resblocks = this.module("resblocks", new ModuleList(blocks));
  }

  /** x: (B, L, D), mask: (L, L) additive or null -> (B, L, D). */
  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidy(() => {
      // --grad-checkpointing: the blocks' activations are recomputed in backward (src/nn/checkpoint.ts).
      const checkpoints = activeCheckpoints();
      if (checkpoints !== null) {
        const layers = [...this.resblocks].map((block) => (h: Tensor, ...m: Tensor[]) =>
          block.forward(h, m[0] ?? null)
        );
        return checkpoints.sequential(x, layers, mask === null ? [] : [mask]);
      }
      let h = x; // h: (B, L, D)
      for (const block of this.resblocks) {
        const next = block.forward(h, mask);
        // Free each block's input once the next exists (never the caller's x).
        if (h !== x) h.dispose();
        h = next;
      }
      return h === x ? x.alias() : h;
    });
  }
}

/** CLIP's causal mask: (L, L), -inf strictly above the diagonal, 0 elsewhere, so token i attends to j <= i. */
export function causalMask(context: number): Tensor {
  return tidy(() => Tensor.full([context, context], -Infinity).triu(1));
}

/**
 * CLIP.initialize_parameters for the blocks (docs/model.md#text-encoder): in_proj N(0, w^-0.5); out_proj.weight and
 * c_proj.weight N(0, w^-0.5 (2 layers)^-0.5); c_fc.weight N(0, (2w)^-0.5). MHA biases stay 0 (torch's MHA zeroes them)
 * and the c_fc/c_proj biases keep PyTorch's default Linear init. Draws in CLIP's order, block by block.
 */
export function initTextTransformer(t: TextTransformer, width: number, layers: number): void {
  const attnStd = width ** -0.5;
  const projStd = width ** -0.5 * (2 * layers) ** -0.5;
  const fcStd = (2 * width) ** -0.5;
  for (const block of t.resblocks) {
    block.attn.in_proj_weight.normal_(0, attnStd);
    block.attn.out_proj.weight.normal_(0, projStd);
    block.mlp.fc1.weight.normal_(0, fcStd);
    block.mlp.fc2.weight.normal_(0, projStd);
  }
}

/** What encodeText needs: the shared embeddings, the transformer, ln_final, the projection and the causal mask. */
export interface TextParts {
  tokenEmbedding: Embedding; // (V, D)
  positionalEmbedding: Tensor; // (context, D)
  transformer: TextTransformer;
  lnFinal: LayerNorm;
  projection: Tensor; // (D, E)
  mask: Tensor; // (context, context)
}

/**
 * tokens: (B, L) int64, L <= context -> (B, E). Embeds, runs the causal blocks, applies ln_final, takes each row
 * at argmax(token ids) (the EOT token has the largest id) and projects. With L < context the positional table and
 * the mask are cut to L (the top-left block of a causal mask is causal).
 */
export function encodeText(parts: TextParts, tokens: Tensor): Tensor {
  const [b, l] = tokens.shape;
  const [context, d] = parts.positionalEmbedding.shape;
  if (tokens.ndim !== 2 || l > context) {
    throw new Error(`encodeText: expected token ids (B, L <= ${context}), got (${tokens.shape})`);
  }
  return tidy(() => {
    const positions = l === context ? parts.positionalEmbedding : parts.positionalEmbedding.narrow(0, 0, l);
    const mask = l === context ? parts.mask : parts.mask.narrow(0, 0, l).narrow(1, 0, l); // mask: (L, L)
    const x = parts.tokenEmbedding.forward(tokens).add(positions); // x: (B, L, D)
    const h = parts.lnFinal.forward(parts.transformer.forward(x, mask)); // h: (B, L, D)
    const eot = tokens.argmax(-1).view([b, 1, 1]).expand([b, 1, d]); // eot: (B, 1, D)
    const pooled = h.gather(1, eot).squeeze(1); // pooled: (B, D)
    return pooled.matmul(parts.projection); // (B, E)
  });
}
