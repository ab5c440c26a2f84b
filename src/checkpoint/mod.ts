// Persistence: our checkpoints (read, write, verify, list), official DetailCLIP `.pt` files, OpenAI/OpenCLIP weights,
// the backbone export, and the non-finite scan every load runs.
export {
  BEST_CHECKPOINT,
  CheckpointError,
  checkpointPath,
  type CheckpointState,
  listCheckpoints,
  loadCheckpoint,
  type LoadedCheckpoint,
  saveCheckpoint,
  type SaveCheckpointOptions,
  verifyCheckpoint,
} from "./checkpoint.ts";
export { saveModelCheckpoint, type SaveModelCheckpointOptions } from "./model_checkpoint.ts";
export {
  isTorchCheckpoint,
  loadOfficialWeights,
  type OfficialCheckpoint,
  OfficialCheckpointError,
  officialModelConfig,
  openOfficialCheckpoint,
} from "./official_checkpoint.ts";
export { backboneTensors, exportBackbone, type ExportedBackbone, readCheckpointTensors } from "./backbone.ts";
export {
  ClipWeightsError,
  type ClipWeightsFile,
  isOpenClipWeights,
  type LoadedOpenClip,
  loadOpenClip,
  openClipWeights,
} from "./clip_weights.ts";
export { nonFiniteTensors } from "./finite.ts";
