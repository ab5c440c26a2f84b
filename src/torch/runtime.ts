// runtime.ts: process-wide libtorch switches: seeds and RNG state, threads, CUDA queries, autocast, and the
// live-handle counter that the leak tests read.
import { type Device, deviceCode, type DType, dtypeCode } from "./dtype.ts";
import { lastError, native } from "./lib.ts";
import { check, own, Tensor } from "./tensor.ts";

/** Seeds the CPU and every CUDA generator. */
export function manualSeed(seed: number): void {
  check(native().dc_manual_seed(BigInt(seed)), "manual_seed", []);
}

/** The generator state of a device as a uint8 tensor (for checkpoints). */
export function rngState(device: Device = "cpu"): Tensor {
  return own(native().dc_rng_get_state(deviceCode(device)), "rng_get_state", []);
}

export function setRngState(state: Tensor, device: Device = "cpu"): void {
  check(native().dc_rng_set_state(deviceCode(device), state.handle), "rng_set_state", [state]);
}

/** Sets libtorch's intra-op CPU threads. */
export function setNumThreads(n: number): void {
  check(native().dc_set_num_threads(n), "set_num_threads", []);
}

export function numThreads(): number {
  return native().dc_get_num_threads();
}

/** Whether libtorch sees a CUDA device. */
export function cudaIsAvailable(): boolean {
  return native().dc_cuda_is_available() === 1;
}

/** How many CUDA devices libtorch sees. */
export function cudaDeviceCount(): number {
  const count = native().dc_cuda_device_count();
  if (count < 0) throw new Error(`cuda_device_count: ${lastError()}`);
  return count;
}

/** True when the library was built with the CUDA kernels of kernels/ (a CUDA libtorch and nvcc). */
export function kernelsCompiled(): boolean {
  return native().dc_kernels_compiled() === 1;
}

/** TF32 for cuBLAS matmuls and cuDNN convolutions; false gives full fp32 (the golden check on CUDA). */
export function setAllowTF32(enabled: boolean): void {
  check(native().dc_set_allow_tf32(enabled ? 1 : 0), "set_allow_tf32", []);
}

/** Peak bytes held by the CUDA caching allocator on a device since the last resetPeakMemoryStats. */
export function maxMemoryAllocated(device: Device = "cuda"): number {
  const bytes = native().dc_cuda_max_memory_allocated(deviceCode(device));
  if (bytes < 0n) throw new Error(`cuda_max_memory_allocated: ${lastError()}`);
  return Number(bytes);
}

export function resetPeakMemoryStats(device: Device = "cuda"): void {
  check(native().dc_cuda_reset_peak_memory_stats(deviceCode(device)), "cuda_reset_peak_memory_stats", []);
}

/** Waits for all queued work on a CUDA device (no-op for the CPU). */
export function synchronize(device: Device = "cpu"): void {
  check(native().dc_cuda_synchronize(deviceCode(device)), "cuda_synchronize", []);
}

/** Number of tensor handles alive in the native library. */
export function liveTensors(): number {
  return Number(native().dc_live_tensors());
}

/** The version of the libtorch the native library was built against. */
export function torchVersion(): string {
  const pointer = native().dc_torch_version();
  return pointer === null ? "unknown" : Deno.UnsafePointerView.getCString(pointer);
}

/** Runs fn with autocast on for a device type ("cpu" or "cuda") in the given low precision, then restores it. */
export function autocast<T>(deviceType: "cpu" | "cuda", dtype: DType, fn: () => T): T {
  const lib = native();
  const type = deviceType === "cpu" ? 0 : 1;
  const wasEnabled = lib.dc_autocast_is_enabled(type) === 1;
  try {
    check(lib.dc_autocast_set(type, 1, dtypeCode(dtype)), "autocast", []);
  } catch (error) {
    // libtorch switches autocast on before it refuses the dtype (1.13's CPU autocast takes bf16 only): switch it back
    // off, with the device's default dtype, which every version accepts.
    if (!wasEnabled) lib.dc_autocast_set(type, 0, dtypeCode(deviceType === "cpu" ? "bfloat16" : "float16"));
    throw error;
  }
  try {
    return fn();
  } finally {
    lib.dc_autocast_set(type, wasEnabled ? 1 : 0, dtypeCode(dtype));
    if (!wasEnabled) lib.dc_autocast_clear_cache();
  }
}
