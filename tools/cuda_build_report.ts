// cuda_build_report.ts: loads the native library the environment points at (DETAILCLIP_LIB, DETAILCLIP_LIBTORCH)
// and prints one JSON line of what it was built with: the libtorch version, whether the CUDA kernels and the NCCL and
// Gloo backends are in, and whether a CUDA device is usable here. tools/check_cuda_build.sh reads it; a load failure
// is the library's own one-line message and exit status 1.
import { cudaIsAvailable, kernelsCompiled, NativeLibraryError, ProcessGroup, torchVersion } from "../src/torch/mod.ts";

export interface BuildReport {
  torch: string;
  kernels: boolean;
  nccl: boolean;
  gloo: boolean;
  cuda_available: boolean;
}

export function buildReport(): BuildReport {
  return {
    torch: torchVersion(),
    kernels: kernelsCompiled(),
    nccl: ProcessGroup.available("nccl"),
    gloo: ProcessGroup.available("gloo"),
    cuda_available: cudaIsAvailable(),
  };
}

if (import.meta.main) {
  try {
    console.log(JSON.stringify(buildReport()));
  } catch (error) {
    if (!(error instanceof NativeLibraryError)) throw error;
    console.error(error.message);
    Deno.exit(1);
  }
}
