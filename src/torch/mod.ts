// The tensor layer's public surface.
export { type Device, type DType, dtypeSize, getDefaultDevice, isFloating, withDefaultDevice } from "./dtype.ts";
export { TorchError } from "./errors.ts";
export { libraryPath, NativeLibraryError } from "./lib.ts";
export { enableGrad, inferenceMode, isGradEnabled, keep, noGrad, tidy } from "./scope.ts";
export { cat, stack, Tensor, type TensorOptions, type TypedArray, where } from "./tensor.ts";
export * as F from "./functional.ts";
export {
  type AdamWHyper,
  adamwStep_,
  ampUnscale_,
  emaUpdate_,
  foreachAdd_,
  foreachCopy_,
  foreachLerp_,
  foreachMul_,
  foreachZero_,
  gradNorm,
} from "./optim.ts";
export {
  autocast,
  cudaDeviceCount,
  cudaIsAvailable,
  kernelsCompiled,
  liveTensors,
  manualSeed,
  maxMemoryAllocated,
  numThreads,
  resetPeakMemoryStats,
  rngState,
  setAllowTF32,
  setNumThreads,
  setRngState,
  synchronize,
  torchVersion,
} from "./runtime.ts";
export {
  loadSafeTensors,
  SAFETENSORS_TEMP_SUFFIX,
  SafeTensorsError,
  SafeTensorsFile,
  type TensorInfo,
  writeSafeTensors,
  type WriteSafeTensorsOptions,
} from "./io.ts";
export {
  asStrided,
  isZipFile,
  PickledNamespace,
  PtFile,
  PtFileError,
  PtStorage,
  PtTensorRef,
  savePt,
} from "./pt_file.ts";
export {
  ConfigMismatchError,
  DEFAULT_BUCKET_MB,
  DEFAULT_MASTER_PORT,
  DEFAULT_TIMEOUT_MS,
  type DistBackend,
  DistError,
  type DistSpec,
  expandNodeList,
  parseDistUrl,
  ProcessGroup,
  type ProcessGroupOptions,
  type ReduceOp,
  resolveDistSpec,
} from "./dist.ts";
