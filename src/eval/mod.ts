// Evaluation's public surface: a checkpoint as an image/text encoder, image preprocessing, zero-shot classification,
// retrieval metrics and linear probes.
export { type EvalModel, EvalModelError, loadEvalModel, type LoadEvalModelOptions } from "./model.ts";
export { type ClipEncoder, loadClipEncoder, type LoadClipEncoderOptions } from "./clip_encoder.ts";
export { type EvalImagesOptions, loadEvalImages } from "./preprocess.ts";
export { DatasetError, type EvalBatch, type EvalDataset } from "./datasets.ts";
export {
  type TextEncoder,
  type Tokenize,
  topKCorrect,
  zeroShotClassifier,
  zeroShotMetrics,
  type ZeroShotResult,
} from "./zeroshot.ts";
export { type CaptionGroups, groupEqualCaptions, retrievalRecall, type RetrievalResult } from "./retrieval.ts";
export {
  extractFeatures,
  type Features,
  type FeatureTower,
  fitLogistic,
  linearProbe,
  type LinearProbeResult,
  meanIoU,
  segmentationProbe,
  type SegProbeResult,
} from "./probe.ts";
export { embedImageFiles, type EmbedOptions, embedTexts } from "./embeddings.ts";
export {
  EVAL_TASKS,
  type EvalReport,
  type EvalRequest,
  type EvalTask,
  evaluateCheckpoint,
  type FileDatasetFlags,
} from "./evaluation.ts";
export { type CatalogReport, type CatalogRunOptions, type PlotSink, runCatalog } from "./catalog_run.ts";
export {
  ade20kSegProbe,
  fileLinearProbe,
  probeClasses,
  type ProbeReport,
  syntheticLinearProbe,
  type SyntheticProbeOptions,
  syntheticSegProbe,
} from "./probe_run.ts";
