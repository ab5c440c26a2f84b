// input_file.ts: reading a file named by the user without trusting it. A FIFO or a device (`--config /dev/zero`,
// a pipe given as `--resume`) would block or read until memory runs out, so the path is checked with stat before it
// is opened (stat never blocks on a FIFO), and a file above its documented cap is refused before it is read.
// The caps are generous next to any real file of that kind; docs/errors.md lists them.

const MIB = 1024 * 1024;

/** Caps on files read whole into memory, by what they are (docs/errors.md, "Input bounds"). */
export const INPUT_CAPS = {
  /** --config JSON of training options: a few hundred bytes in practice. */
  config: 1 * MIB,
  /** BPE merges (OpenAI's bpe_simple_vocab_16e6.txt is 1.4 MB; a 1M-merge learned file about 20 MB), after gunzip. */
  merges: 64 * MIB,
  /** labels.json / templates.json / dataset catalogs of zero-shot evaluation (the official ones are < 100 KB). */
  labels: 16 * MIB,
  /** A caption corpus for `data bpe`, after gunzip: V8 holds at most about 512 M characters in one string. */
  corpus: 512 * MIB - 64,
} as const;

/** Why a user-named input file is refused; the message names the file, the option and the problem. */
export class InputFileError extends Error {
  constructor(readonly path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InputFileError";
  }
}

/** What a non-regular file is, for messages. */
function describeKind(info: Deno.FileInfo): string {
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO (named pipe)";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/**
 * Stats `path` (following symlinks, without opening it) and refuses anything but a regular file. `what` names the
 * file in messages (e.g. "--config /x.json"). Returns the file's size. Errors of stat itself (missing, no
 * permission) are rethrown as InputFileError with the OS reason and the original as cause.
 */
export function requireRegularFile(path: string, what: string): number {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    throw new InputFileError(path, `${what}: cannot read: ${(error as Error).message}`, { cause: error });
  }
  if (!info.isFile) throw new InputFileError(path, `${what}: ${describeKind(info)}, not a regular file`);
  return info.size;
}

/**
 * Reads a regular file whole, refusing it when it is larger than `maxBytes`. The read itself stops at the cap + 1
 * bytes, so a file that grows between stat and read cannot exceed it either.
 */
export function readInputFile(path: string, what: string, maxBytes: number): Uint8Array {
  const size = requireRegularFile(path, what);
  if (size > maxBytes) throw new InputFileError(path, `${what}: ${size} bytes exceeds the cap of ${maxBytes} bytes`);
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (error) {
    throw new InputFileError(path, `${what}: cannot open: ${(error as Error).message}`, { cause: error });
  }
  try {
    const buffer = new Uint8Array(Math.min(size, maxBytes) + 1);
    let filled = 0;
    while (filled < buffer.length) {
      const n = file.readSync(buffer.subarray(filled));
      if (n === null || n === 0) break;
      filled += n;
    }
    if (filled > maxBytes) throw new InputFileError(path, `${what}: grew past the cap of ${maxBytes} bytes`);
    return buffer.subarray(0, filled);
  } finally {
    file.close();
  }
}

/**
 * Deno.readFileSync for a path a user named, refusing a FIFO, a device or a directory before opening it (InputFileError);
 * errors of stat itself (NotFound, PermissionDenied) are the original Deno errors, so callers' handling stays as it
 * was. For files whose size is theirs to choose (manifests, metadata pickles, data sets): no cap beyond memory.
 */
export function readRegularFileSync(path: string): Uint8Array {
  const info = Deno.statSync(path);
  if (!info.isFile) throw new InputFileError(path, `${path}: ${describeKind(info)}, not a regular file`);
  return Deno.readFileSync(path);
}

/** readRegularFileSync as UTF-8 text. */
export function readRegularTextSync(path: string): string {
  return new TextDecoder().decode(readRegularFileSync(path));
}

/** readInputFile as UTF-8 text. */
export function readInputText(path: string, what: string, maxBytes: number): string {
  return new TextDecoder().decode(readInputFile(path, what, maxBytes));
}
