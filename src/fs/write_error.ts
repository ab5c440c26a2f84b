// write_error.ts: a failed write of an output (a full disk, a read-only or vanished folder, a closed stdout), typed
// so the CLI ends with one line naming the file and exit status 7 instead of the OS error without a path.

export class WriteError extends Error {
  /** `detail` replaces the cause's message in the line (the cause itself stays attached, e.g. for its OS code). */
  constructor(readonly path: string, cause: unknown, detail?: string) {
    super(`cannot write ${path}: ${detail ?? (cause instanceof Error ? cause.message : String(cause))}`, { cause });
    this.name = "WriteError";
  }
}
