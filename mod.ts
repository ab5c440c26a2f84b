// detailclip: the public library API, by name. Only re-exports; each area's own surface is its src/<area>/mod.ts.
//
//   import { ClipTokenizer, loadEvalImages, loadEvalModel, train } from "jsr:@detailclip/detailclip";

// Tensors and devices (src/torch): the libtorch tensor, scopes that free intermediates, functional ops, safetensors.
export {
  cat,
  cudaDeviceCount,
  cudaIsAvailable,
  type Device,
  type DType,
  enableGrad,
  F,
  getDefaultDevice,
  inferenceMode,
  isGradEnabled,
  keep,
  libraryPath,
  liveTensors,
  loadSafeTensors,
  manualSeed,
  NativeLibraryError,
  noGrad,
  SafeTensorsError,
  SafeTensorsFile,
  setNumThreads,
  stack,
  Tensor,
  type TensorOptions,
  tidy,
  TorchError,
  torchVersion,
  type TypedArray,
  where,
  withDefaultDevice,
  writeSafeTensors,
} from "./src/torch/mod.ts";

// Modules (src/nn): the base class with named parameters, buffers and state dicts.
export { Module, StateDictError } from "./src/nn/mod.ts";

// Models (src/models): presets by name, the builder, DetailCLIP, CLIP and the OpenAI/OpenCLIP architecture.
export {
  type AnyModel,
  buildModel,
  buildPreset,
  CLIP,
  type ClipConfig,
  DetailCLIP,
  type DetailClipConfig,
  type DetailClipOutputs,
  isOpenClipPreset,
  MaskVisionTransformer,
  type ModelConfig,
  modelPreset,
  OPENAI_MEAN,
  OPENAI_STD,
  OpenClip,
  type OpenClipConfig,
  openClipPreset,
  openClipPresetNames,
  OpenClipVisionTransformer,
  parseModelConfig,
  presetNames,
  TextTransformer,
} from "./src/models/mod.ts";

// Losses (src/losses): CLIP contrastive, iBOT self-distillation, pixel reconstruction and their weighted sum.
export {
  clipLoss,
  type ClipLossResult,
  detailClipLoss,
  type DetailClipLossResult,
  IBOTLoss,
  type IBOTLossResult,
  patchify,
  reconstructionLoss,
} from "./src/losses/mod.ts";

// Data (src/data): the CLIP tokenizer (OpenAI's vocabulary or one learned from captions), the synthetic shapes set.
export {
  BpeFileError,
  ClipTokenizer,
  DEFAULT_CONTEXT_LENGTH,
  IMAGENET_MEAN,
  IMAGENET_STD,
  OPENAI_MERGE_COUNT,
  readMerges,
  syntheticSample,
  trainBpe,
} from "./src/data/mod.ts";

// File formats (src/formats).
export { encodePng } from "./src/formats/mod.ts";

// Checkpoints (src/checkpoint): ours, official DetailCLIP `.pt`, OpenAI/OpenCLIP weights, the backbone export.
export {
  CheckpointError,
  ClipWeightsError,
  exportBackbone,
  isOpenClipWeights,
  isTorchCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  type LoadedCheckpoint,
  loadOfficialWeights,
  loadOpenClip,
  OfficialCheckpointError,
  openOfficialCheckpoint,
  saveCheckpoint,
  saveModelCheckpoint,
  verifyCheckpoint,
} from "./src/checkpoint/mod.ts";

// Training (src/train).
export {
  OptionError,
  parseTrainOptions,
  train,
  type TrainOptions,
  trainOptions,
  type TrainSummary,
} from "./src/train/mod.ts";

// Evaluation (src/eval): a checkpoint as an encoder, eval preprocessing, zero-shot, retrieval, linear probe, one
// evaluation of a checkpoint as `deno task eval` runs it, the official suite.
export {
  type ClipEncoder,
  DatasetError,
  type EvalModel,
  EvalModelError,
  evaluateCheckpoint,
  extractFeatures,
  linearProbe,
  type LinearProbeResult,
  loadClipEncoder,
  loadEvalImages,
  loadEvalModel,
  retrievalRecall,
  type RetrievalResult,
  runCatalog,
  zeroShotClassifier,
  zeroShotMetrics,
  type ZeroShotResult,
} from "./src/eval/mod.ts";

// Figures (src/viz).
export { lossCurveSvg } from "./src/viz/mod.ts";
