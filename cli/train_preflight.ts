// train_preflight.ts: what `train` can check before any work starts, so a bad combination fails in a second with one
// line naming the option instead of minutes later inside libtorch: precision × device, the device itself, the thread
// counts against the machine, the output folder, and a --resume file that is not a regular file (a FIFO would block).
import { requireRegularFile } from "../src/io/input_file.ts";
import { requireDevice } from "../src/torch/device.ts";
import type { Device } from "../src/torch/dtype.ts";
import { CheckpointError } from "../src/train/checkpoint.ts";
import type { TrainOptions } from "../src/train/options.ts";
import { UsageError } from "./usage_error.ts";

/** Throws a UsageError (or a CheckpointError for --resume) for anything that cannot work; warns on stderr. */
export function preflightTrain(options: TrainOptions, warn: (line: string) => void = console.error): void {
  const device = options.device as Device;
  const precision = options.disableAmp ? "fp32" : options.precision;
  if (precision === "fp16" && device === "cpu") {
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

/**
 * The run folder must be a folder we can create and write: a file in its place, a file on its path, a read-only
 * parent or a full disk each end here with one line, before the model is built.
 */
export function checkOutputDir(dir: string, flag = "--output-dir"): void {
  let info: Deno.FileInfo | null = null;
  try {
    info = Deno.statSync(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new UsageError(`${flag} ${dir}: ${reason(error)}`);
    }
  }
  if (info !== null && !info.isDirectory) {
    throw new UsageError(`${flag} ${dir}: exists and is not a folder (choose another path or remove the file)`);
  }
  try {
    Deno.mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw new UsageError(`${flag} ${dir}: cannot create the folder: ${reason(error)}`);
  }
  const probe = `${dir}/.detailclip-write-probe-${Deno.pid}`;
  try {
    Deno.writeFileSync(probe, new Uint8Array(0)); // empty: a full disk is reported by the first real write
  } catch (error) {
    throw new UsageError(`${flag} ${dir}: the folder is not writable: ${reason(error)}`);
  } finally {
    try {
      Deno.removeSync(probe);
    } catch { /* never created */ }
  }
}

/** An OS error's reason without Deno's `: mkdir '/path'` suffix (the path is already in the message). */
function reason(error: unknown): string {
  return (error as Error).message.replace(/(\(os error \d+\)).*$/, "$1");
}
