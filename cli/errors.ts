// errors.ts: the CLI's one error boundary. Every command's failure ends here and becomes one line on stderr,
// `detailclip <command>: <what> (<which file or option>)`, with a hint where one helps, and a documented exit status
// (docs/errors.md). Only an unexpected error (a bug) keeps a pointer into the code, and its full stack is printed
// with DETAILCLIP_DEBUG=1. The classification is by type, in this one table, so the error classes stay where they are
// thrown and none of them needs to know about exit statuses.
import { DataError } from "../src/data/data_error.ts";
import { PickleError } from "../src/formats/pickle.ts";
import { RedCapsError } from "../src/data/redcaps.ts";
import { BpeFileError } from "../src/data/tokenizer.ts";
import { ZipError } from "../src/formats/zip.ts";
import { DatasetError } from "../src/eval/datasets.ts";
import { EvalModelError } from "../src/eval/model.ts";
import { InputFileError } from "../src/fs/input_file.ts";
import { WriteError } from "../src/fs/write_error.ts";
import { StateDictError } from "../src/nn/module.ts";
import { DeviceError } from "../src/torch/device.ts";
import { DistError } from "../src/torch/dist.ts";
import { TorchError } from "../src/torch/errors.ts";
import { SafeTensorsError } from "../src/torch/io.ts";
import { NativeLibraryError } from "../src/torch/lib.ts";
import { PtFileError } from "../src/torch/pt_file.ts";
import { CheckpointError } from "../src/checkpoint/checkpoint.ts";
import { ClipWeightsError } from "../src/checkpoint/clip_weights.ts";
import { NonFiniteLossError, NonFiniteStateError } from "../src/train/loop.ts";
import { OfficialCheckpointError } from "../src/checkpoint/official_checkpoint.ts";
import { OptionError } from "../src/train/options.ts";
import { VizImageError } from "../src/viz/teacher_tokens.ts";
import { UsageError } from "./usage_error.ts";

/** The exit statuses of every command (docs/errors.md has the table). */
export const EXIT = {
  ok: 0,
  unexpected: 1,
  usage: 2,
  nonFiniteLoss: 3,
  distributed: 4,
  data: 5,
  checkpoint: 6,
  io: 7,
} as const;

/** How one failure is reported: its status, its one line (without the `detailclip <command>: ` prefix), a hint. */
export interface Failure {
  status: number;
  message: string;
  hint?: string;
}

/** OS error codes that mean the disk or the stream, not the input, failed. */
const DISK_CODES = new Set(["ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS", "EPIPE"]);

/** The errors in `error`'s cause chain, outermost first (bounded, in case of a cycle). */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = error; e !== undefined && e !== null && chain.length < 8; e = (e as { cause?: unknown }).cause) {
    chain.push(e);
    if (typeof e !== "object") break;
  }
  return chain;
}

function osCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

/** node:util parseArgs's own errors (an unknown option, a missing value), thrown by the commands that use it. */
function isParseArgsError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}

function isDenoFsError(error: unknown): boolean {
  return Object.values(Deno.errors).some((type) => error instanceof type);
}

/** A disk-full class of failure somewhere in the chain (ENOSPC, EDQUOT, EFBIG, EIO, EROFS, EPIPE). */
function diskFailure(error: unknown): string | undefined {
  for (const e of causes(error)) {
    const code = osCode(e);
    if (code !== undefined && DISK_CODES.has(code)) return code;
    if (e instanceof Error && /No space left on device|Disk quota exceeded|File too large/.test(e.message)) {
      return "ENOSPC";
    }
  }
  return undefined;
}

/** The first line of a message, whitespace-trimmed (help text after a blank line is left to --help), without a
 * `detailclip: ` of its own (the line gets `detailclip <command>: `). */
function firstLine(text: string): string {
  const line = text.split("\n").map((line) => line.trim()).find((line) => line !== "") ?? "";
  return line.replace(/^detailclip:\s*/, "");
}

/** Classifies a thrown value; null when it is unexpected (a bug, or a failure this table does not know). */
export function classify(error: unknown, command: string): Failure | null {
  const message = error instanceof Error ? firstLine(error.message) : firstLine(String(error));
  const disk = diskFailure(error);
  const diskHint = command === "train"
    ? "free some space, then rerun with --resume auto: the last checkpoint written is intact"
    : "free some space and rerun";
  if (
    error instanceof UsageError || error instanceof OptionError || error instanceof DeviceError ||
    isParseArgsError(error)
  ) {
    const hint = message.includes("--help") ? undefined : `see detailclip ${command} --help`;
    return { status: EXIT.usage, message, hint };
  }
  if (error instanceof NativeLibraryError) return { status: EXIT.usage, message };
  if (error instanceof NonFiniteLossError || error instanceof NonFiniteStateError) {
    return { status: EXIT.nonFiniteLoss, message, hint: "try a lower --lr or --precision fp32" };
  }
  if (error instanceof DistError) return { status: EXIT.distributed, message };
  if (error instanceof TorchError && error.nativeMessage.startsWith("dist ")) {
    return { status: EXIT.distributed, message: firstLine(error.nativeMessage) };
  }
  if (error instanceof WriteError) return { status: EXIT.io, message, hint: disk ? diskHint : undefined };
  if (error instanceof CheckpointError && (error.problem === "write-failed" || disk)) {
    return { status: EXIT.io, message, hint: disk ? diskHint : undefined };
  }
  if (
    error instanceof CheckpointError || error instanceof SafeTensorsError || error instanceof PtFileError ||
    error instanceof OfficialCheckpointError || error instanceof StateDictError || error instanceof EvalModelError ||
    error instanceof ClipWeightsError
  ) {
    return { status: disk ? EXIT.io : EXIT.checkpoint, message, hint: disk ? diskHint : undefined };
  }
  if (
    error instanceof DataError || error instanceof DatasetError || error instanceof PickleError ||
    error instanceof ZipError || error instanceof RedCapsError || error instanceof BpeFileError ||
    error instanceof VizImageError || error instanceof InputFileError
  ) {
    return { status: disk ? EXIT.io : EXIT.data, message };
  }
  if (disk !== undefined || causes(error).some((e) => isDenoFsError(e) || osCode(e) !== undefined)) {
    return { status: EXIT.io, message, hint: disk ? diskHint : undefined };
  }
  return null;
}

/** `file:line:col` of the innermost frame of our own code in a stack, for the one line of an unexpected error. */
function topFrame(error: unknown): string | undefined {
  const stack = error instanceof Error ? error.stack ?? "" : "";
  const frame = stack.split("\n").find((line) => /^\s+at /.test(line) && !line.includes("ext:"));
  const where = frame?.match(/\(?((?:file|https?):\/\/[^()\s]+:\d+:\d+)\)?\s*$/)?.[1];
  if (where === undefined) return undefined;
  const cwd = `file://${Deno.cwd()}/`;
  return where.startsWith(cwd) ? where.slice(cwd.length) : where;
}

function debugEnabled(): boolean {
  try {
    return (Deno.env.get("DETAILCLIP_DEBUG") ?? "") !== "" && Deno.env.get("DETAILCLIP_DEBUG") !== "0";
  } catch {
    return false; // no --allow-env: no debug output
  }
}

/** The full stack of an error and of each cause, for DETAILCLIP_DEBUG=1. */
function fullTrace(error: unknown): string {
  return causes(error).map((e, i) => {
    const text = e instanceof Error ? e.stack ?? `${e.name}: ${e.message}` : String(e);
    return i === 0 ? text : `caused by: ${text}`;
  }).join("\n");
}

/** The line(s) printed for a failure: exactly one line unless DETAILCLIP_DEBUG is set. */
export function describeFailure(command: string, error: unknown): { status: number; text: string } {
  const known = classify(error, command);
  const prefix = `detailclip ${command}: `;
  let line: string;
  let status: number;
  if (known !== null) {
    status = known.status;
    line = prefix + known.message + (known.hint ? `; ${known.hint}` : "");
  } else {
    status = EXIT.unexpected;
    const name = error instanceof Error ? error.name : typeof error;
    const message = error instanceof Error ? firstLine(error.message) : firstLine(String(error));
    const at = topFrame(error);
    line = `${prefix}unexpected error: ${name}: ${message}${at ? ` (at ${at})` : ""}; ` +
      "set DETAILCLIP_DEBUG=1 for the full trace";
  }
  return { status, text: debugEnabled() ? `${line}\n${fullTrace(error)}` : line };
}

/** Prints the failure's line on stderr (ignoring a stderr that is gone, too) and returns its exit status. */
export function reportFailure(command: string, error: unknown): number {
  const { status, text } = describeFailure(command, error);
  try {
    console.error(text);
  } catch {
    // stderr itself is closed or full: the exit status still tells
  }
  return status;
}
