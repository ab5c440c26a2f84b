// train_preflight.ts: what `train` can check before any work starts, so a bad combination fails in a second with one
// line naming the option instead of minutes later inside libtorch: precision × device, the device itself, the thread
// counts against the machine, the output folder, and a --resume file that is not a regular file (a FIFO would block).
import { requireRegularFile } from "../src/fs/input_file.ts";
import { requireDevice } from "../src/torch/device.ts";
import type { Device } from "../src/torch/dtype.ts";
import { CheckpointError } from "../src/checkpoint/checkpoint.ts";
import { autocastUnsupported } from "../src/train/amp.ts";
import type { TrainOptions } from "../src/train/options.ts";
import { UsageError } from "./usage_error.ts";
import { checkOutputDir } from "./output_paths.ts";

/** Throws a UsageError (or a CheckpointError for --resume) for anything that cannot work; warns on stderr. */
export function preflightTrain(options: TrainOptions, warn: (line: string) => void = console.error): void {
  const device = options.device as Device;
  const precision = options.disableAmp ? "fp32" : options.precision;
  // libtorch 1.13's CPU autocast runs bf16 only; 2.x also autocasts the CPU to fp16 (slowly: it is how the CUDA build's
  // fp16 loop is exercised without a GPU, tools/check_cuda_build.sh). Asked of the libtorch loaded, not assumed.
  if (precision === "fp16" && device === "cpu" && autocastUnsupported("cpu", "fp16") !== null) {
    throw new UsageError(
      "--precision fp16 needs a CUDA device (--device cuda); the CPU's autocast runs bf16 only: use --precision bf16 " +
        "or fp32",
    );
  }
  requireDevice(device);
  checkThreads(options, warn);
  checkOutputDir(options.outputDir);
  if (options.resume !== undefined && options.resume !== "auto") {
    try {
      requireRegularFile(options.resume, `--resume ${options.resume}`);
    } catch (error) {
      throw new CheckpointError(options.resume, "unreadable", (error as Error).message.replace(/^--resume \S+: /, ""));
    }
  }
}

/** More threads than cores only slows libtorch down; the schema already refuses absurd counts. */
function checkThreads(options: TrainOptions, warn: (line: string) => void): void {
  const cores = navigator.hardwareConcurrency;
  for (const [flag, value] of [["--threads", options.threads], ["--workers", options.workers]] as const) {
    if (value !== undefined && value > cores) {
      warn(`detailclip train: warning: ${flag} ${value} is more than this machine's ${cores} cores`);
    }
  }
}
