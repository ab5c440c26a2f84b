// The losses' public surface: CLIP contrastive, iBOT self-distillation, pixel reconstruction and their weighted sum.
export { clipLoss, type ClipLossInputs, type ClipLossOptions, type ClipLossResult } from "./clip.ts";
export {
  IBOTLoss,
  type IBOTLossHooks,
  type IBOTLossInputs,
  type IBOTLossOptions,
  type IBOTLossResult,
} from "./ibot.ts";
export { patchify, reconstructionLoss, type ReconstructionLossOptions } from "./reconstruction.ts";
export {
  detailClipLoss,
  type DetailClipLossInputs,
  type DetailClipLossOptions,
  type DetailClipLossResult,
  type DetailClipViews,
  type LossWeights,
} from "./total.ts";
