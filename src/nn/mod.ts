// The neural-network layers: the Module base and the building blocks of the three towers.
export { type LoadReport, Module, StateDictError } from "./module.ts";
export { ModuleList } from "./module_list.ts";
export { defaultBias, defaultWeight, Linear } from "./linear.ts";
export { Conv2d } from "./conv.ts";
export { LayerNorm } from "./layer_norm.ts";
export { Embedding } from "./embedding.ts";
export { activate, type Activation, quickGelu } from "./activation.ts";
export { Mlp, type MlpOptions } from "./mlp.ts";
export { Attention, firstQueryAttention, mergeHeads, splitHeads } from "./attention.ts";
export { MultiheadAttention } from "./multihead_attention.ts";
export { Block } from "./block.ts";
export { ResidualAttentionBlock } from "./residual_attention_block.ts";
export { WeightNormLinear } from "./weight_norm_linear.ts";
