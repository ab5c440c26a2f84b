// The tensor layer's public surface.
export { type Device, type DType, dtypeSize, getDefaultDevice, isFloating, withDefaultDevice } from "./dtype.ts";
export { TorchError } from "./errors.ts";
export { libraryPath, NativeLibraryError } from "./lib.ts";
export { enableGrad, inferenceMode, isGradEnabled, keep, noGrad, tidy } from "./scope.ts";
export { cat, stack, Tensor, type TensorOptions, type TypedArray, where } from "./tensor.ts";
export * as F from "./functional.ts";
export * from "./optim.ts";
export * from "./runtime.ts";
export * from "./io.ts";
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
export * from "./dist.ts";
