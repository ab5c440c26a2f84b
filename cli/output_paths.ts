// output_paths.ts: output folders and files are checked before a command does any work: a file where a folder must
// be, a path under a file, a folder that cannot be created or written, a folder where a file must be. Each is one
// line with the option's name (status 2) instead of a failure after minutes of training or evaluation.
import { dirname } from "node:path";
import { UsageError } from "./usage_error.ts";

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

/** An output file: not a folder, and its folder is one we can create and write. */
export function checkOutputFile(path: string, flag: string): void {
  let info: Deno.FileInfo | null = null;
  try {
    info = Deno.statSync(path);
  } catch { /* not there yet: the usual case */ }
  if (info !== null && info.isDirectory) throw new UsageError(`${flag} ${path}: is a folder; give a file name`);
  if (info !== null && !info.isFile) throw new UsageError(`${flag} ${path}: exists and is not a regular file`);
  checkOutputDir(dirname(path), `${flag} ${path}: its folder`);
}
