// atomic_write.ts: the one way detailclip writes a file it produces (checkpoints, exports, pictures, JSON, CSV,
// merges): the bytes go to `<path>.tmp-<pid>` in the same folder, are fsynced, then renamed over `path`, and the
// folder is fsynced. A crash, a kill or a full disk never leaves a partial file under the final name, and the previous
// file stays whole until the new one is complete. The trade: the disk briefly holds both copies. A symlink at `path`
// is replaced by the new file, not written through. Appended logs (metrics.jsonl) are the one exception: they are
// appended line by line by their writer.

import { WriteError } from "./write_error.ts";

/** Suffix of the temp file a write goes through: `<path>.tmp-<pid>`; a crash can leave one behind. */
export const TEMP_SUFFIX = ".tmp-";

/** A write that failed; the message names the file and says the previous one (if any) is untouched. */
export class OutputWriteError extends WriteError {
  constructor(path: string, reason: string, options?: ErrorOptions) {
    super(path, options?.cause, `${reason} (any previous ${path} is untouched)`);
    this.name = "OutputWriteError";
  }
}

/** What to write: bytes, text (UTF-8), or a function that streams into the open temp file. */
export type AtomicContents = Uint8Array | string | ((file: Deno.FsFile) => void);

/** The temp name a write of `path` by this process goes through. */
export function tempPathOf(path: string): string {
  return `${path}${TEMP_SUFFIX}${Deno.pid}`;
}

/**
 * Writes `contents` to `path` atomically (see the file comment). Throws OutputWriteError naming `path` when the
 * write fails, having removed its temp file; an error thrown by a streaming `contents` function propagates as it is.
 * `fsync: false` (bulk writes of many small files, e.g. a data set's images) keeps the rename, so a killed process
 * still never leaves a partial file under the final name, but not the durability against a power loss.
 */
export function writeFileAtomic(path: string, contents: AtomicContents, options: { fsync?: boolean } = {}): void {
  const { fsync = true } = options;
  const tmp = tempPathOf(path);
  let file: Deno.FsFile | null = null;
  try {
    file = Deno.openSync(tmp, { write: true, create: true, truncate: true });
    if (typeof contents === "function") contents(file);
    else writeAll(file, typeof contents === "string" ? new TextEncoder().encode(contents) : contents);
    if (fsync) file.syncSync();
    file.close();
    file = null;
    Deno.renameSync(tmp, path);
  } catch (error) {
    try {
      file?.close();
    } catch { /* already closed */ }
    try {
      Deno.removeSync(tmp);
    } catch { /* never created, or renamed */ }
    if (typeof contents === "function" && !isIoError(error)) throw error;
    throw new OutputWriteError(path, (error as Error).message, { cause: error });
  }
  if (fsync) syncParentDirectory(path);
}

/** Writes all of `bytes` (a single write may be short). */
export function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.byteLength) written += file.writeSync(bytes.subarray(written));
}

/** Makes a rename in `path`'s folder durable; best effort, since not every platform lets a folder be opened. */
export function syncParentDirectory(path: string): void {
  const slash = path.lastIndexOf("/");
  syncDirectory(slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash));
}

/** fsync of a folder, best effort. */
export function syncDirectory(dir: string): void {
  try {
    const handle = Deno.openSync(dir, { read: true });
    try {
      handle.syncSync();
    } finally {
      handle.close();
    }
  } catch { /* not supported here; the data itself was already fsynced */ }
}

/** Errors of the file system itself (ENOSPC, EIO, EACCES, ...), as opposed to a bug in a streaming writer. */
function isIoError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (Object.values(Deno.errors).some((kind) => error instanceof kind)) return true;
  return typeof (error as { code?: unknown }).code === "string";
}
