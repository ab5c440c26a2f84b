// tar_stream.ts: reads a webdataset shard front to back, once, as a stream: a local file (read in 1 MiB chunks, so
// the storage sees one sequential read per shard) or the standard output of a `pipe:CMD` subprocess (the way OpenCLIP
// users read from object stores: `pipe:aws s3 cp s3://bucket/000.tar -`). No index, no seek backwards: headers are
// parsed as they arrive and consecutive members sharing a key are handed out as one sample group.
//
// Reads are synchronous (the training loop asks for batches synchronously). A pipe is a named FIFO the subprocess's
// shell writes to, so a blocking read waits for the command's output without an event loop turn.
import { checksumOk, cString, numeric, paxRecords, splitKey } from "./webdataset.ts";

const BLOCK = 512;
const CHUNK = 1 << 20;

/** A forward-only byte source. */
export interface ByteSource {
  /** Fills `into` from the front; returns the bytes read, 0 at the end. */
  read(into: Uint8Array): number;
  /** Skips up to n bytes; returns how many there were. */
  skip(n: number): number;
  close(): void;
}

/** A local file read forward; skips beyond the buffer seek (never backwards). */
export class FileByteSource implements ByteSource {
  readonly #file: Deno.FsFile;
  readonly #size: number;
  #position = 0;

  constructor(path: string) {
    this.#file = Deno.openSync(path, { read: true });
    this.#size = this.#file.statSync().size;
  }

  read(into: Uint8Array): number {
    const got = this.#file.readSync(into);
    if (got === null) return 0;
    this.#position += got;
    return got;
  }

  skip(n: number): number {
    const step = Math.max(0, Math.min(n, this.#size - this.#position));
    this.#position += step;
    this.#file.seekSync(this.#position, Deno.SeekMode.Start);
    return step;
  }

  close(): void {
    this.#file.close();
  }
}

/** The standard output of `sh -c CMD`, through a FIFO in `dir`; closing early ends the command. */
export class PipeByteSource implements ByteSource {
  readonly #fifo: string;
  readonly #child: Deno.ChildProcess;
  readonly #file: Deno.FsFile;
  #done = false;

  constructor(command: string, dir: string, name: string) {
    this.#fifo = `${dir}/${name}.fifo`;
    try {
      Deno.removeSync(this.#fifo);
    } catch { /* not there */ }
    const made = new Deno.Command("mkfifo", { args: [this.#fifo], stderr: "piped" }).outputSync();
    if (!made.success) throw new Error(`pipe: mkfifo ${this.#fifo}: ${new TextDecoder().decode(made.stderr).trim()}`);
    // The shell opens the FIFO for writing before it runs the command; opening it for reading below waits for that.
    this.#child = new Deno.Command("sh", {
      args: ["-c", 'exec "$0" -c "$1" > "$2"', "sh", command, this.#fifo],
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    this.#child.unref();
    this.#child.status.catch(() => {});
    this.#file = Deno.openSync(this.#fifo, { read: true });
  }

  read(into: Uint8Array): number {
    if (this.#done) return 0;
    const got = this.#file.readSync(into);
    if (got === null || got === 0) {
      this.#done = true;
      return 0;
    }
    return got;
  }

  skip(n: number): number {
    const scratch = new Uint8Array(Math.min(n, CHUNK));
    let left = n;
    while (left > 0) {
      const got = this.read(scratch.subarray(0, Math.min(left, scratch.length)));
      if (got === 0) break;
      left -= got;
    }
    return n - left;
  }

  close(): void {
    if (!this.#done) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    this.#file.close();
    try {
      Deno.removeSync(this.#fifo);
    } catch { /* already gone */ }
  }
}

/** A member header as it arrives; its data is read or skipped next. */
export interface StreamMember {
  name: string;
  /** Where its data starts in the stream. */
  offset: number;
  size: number;
}

export type TarEnd = "end" | "truncated" | "corrupt";

/** Walks tar headers over a ByteSource, forward only. */
export class TarStreamReader {
  readonly #source: ByteSource;
  #buffer = new Uint8Array(CHUNK);
  #start = 0;
  #end = 0;
  /** Stream offset of #buffer[#start]. */
  #position = 0;
  /** Data of the current member not yet consumed (plus its padding). */
  #dataLeft = 0;
  #padLeft = 0;
  /** Bytes read from the source (a zero-byte stream is a missing shard). */
  bytesSeen = 0;

  constructor(source: ByteSource) {
    this.#source = source;
  }

  // Makes at least n bytes available (n <= CHUNK); false at the end of the stream.
  #fill(n: number): boolean {
    if (this.#end - this.#start >= n) return true;
    if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (this.#end < n) {
      const got = this.#source.read(this.#buffer.subarray(this.#end));
      if (got === 0) return false;
      this.#end += got;
      this.bytesSeen += got;
    }
    return true;
  }

  #consume(n: number): Uint8Array {
    const out = this.#buffer.subarray(this.#start, this.#start + n);
    this.#start += n;
    this.#position += n;
    return out;
  }

  // Skips n bytes; false when the stream ended first.
  #skip(n: number): boolean {
    const buffered = Math.min(n, this.#end - this.#start);
    this.#start += buffered;
    this.#position += buffered;
    let left = n - buffered;
    if (left > 0) {
      const skipped = this.#source.skip(left);
      this.bytesSeen += skipped;
      this.#position += skipped;
      left -= skipped;
    }
    return left === 0;
  }

  // Reads n bytes into a new array; null when the stream ended first.
  #read(n: number): Uint8Array | null {
    const out = new Uint8Array(n);
    let done = 0;
    while (done < n) {
      if (!this.#fill(1)) return null;
      const take = Math.min(n - done, this.#end - this.#start);
      out.set(this.#consume(take), done);
      done += take;
    }
    return out;
  }

  /** The current member's data (call at most once per member, before next()). Null: the stream was truncated. */
  data(): Uint8Array | null {
    const out = this.#read(this.#dataLeft);
    this.#dataLeft = 0;
    return out;
  }

  /** The next regular member, or why the archive ended. Unread data of the previous member is skipped. */
  next(): StreamMember | TarEnd {
    let longName: string | null = null;
    let pax: Map<string, string> | null = null;
    for (;;) {
      if (!this.#skip(this.#dataLeft + this.#padLeft)) return "truncated";
      this.#dataLeft = this.#padLeft = 0;
      if (!this.#fill(BLOCK)) {
        // Ending on a member boundary without the two zero blocks is accepted (Python's tarfile does too).
        return this.#end === this.#start ? "end" : "truncated";
      }
      const block = this.#consume(BLOCK);
      if (block.every((b) => b === 0)) return "end";
      if (!checksumOk(block)) return "corrupt";
      const size = pax?.has("size") ? Number(pax.get("size")) : numeric(block, 124, 12);
      if (!Number.isFinite(size) || size < 0) return "corrupt";
      const type = String.fromCharCode(block[156]);
      let name = cString(block, 0, 100);
      if (cString(block, 257, 5) === "ustar") {
        const prefix = cString(block, 345, 155);
        if (prefix !== "") name = prefix + "/" + name;
      }
      const header = { offset: this.#position, size };
      this.#dataLeft = size;
      this.#padLeft = Math.ceil(size / BLOCK) * BLOCK - size;
      if (type === "L" || type === "x") {
        const data = this.data();
        if (data === null) return "truncated";
        if (type === "L") longName = cString(data, 0, size);
        else pax = paxRecords(data);
        continue;
      }
      if (type === "g") continue; // a global pax header: nothing a sample needs
      if (longName !== null) name = longName;
      if (pax?.has("path")) name = pax.get("path")!;
      longName = null;
      pax = null;
      if (type === "0" || type === "\0" || type === "7") return { name, ...header };
    }
  }

  close(): void {
    this.#source.close();
    this.#buffer = new Uint8Array(0);
  }
}

/** One member of a sample group: its data when it was read, else where it is in the stream. */
export interface GroupMember {
  offset: number;
  size: number;
  data: Uint8Array | null;
}

/** Consecutive members with one key (webdataset's sample); a new key or a repeated extension closes it. */
export interface MemberGroup {
  key: string;
  members: Map<string, GroupMember>;
}

/**
 * Groups a TarStreamReader's members into samples. `wants(ext)` says which members' data to read (captions, and
 * images when the stream cannot be re-read by offset); the others are skipped.
 */
export class TarGroupReader {
  readonly reader: TarStreamReader;
  readonly #wants: (ext: string) => boolean;
  #pending: { key: string; ext: string; member: GroupMember } | null = null;
  /** Set once the archive ended: how. */
  ended: TarEnd | null = null;

  constructor(reader: TarStreamReader, wants: (ext: string) => boolean) {
    this.reader = reader;
    this.#wants = wants;
  }

  // The next member with a key, its data read when wanted; null at the end (`ended` says how).
  #member(): { key: string; ext: string; member: GroupMember } | null {
    for (;;) {
      const next = this.reader.next();
      if (typeof next === "string") {
        this.ended = next;
        return null;
      }
      const split = splitKey(next.name);
      if (split === null) continue; // no extension: not part of any sample (e.g. a README)
      let data: Uint8Array | null = null;
      if (this.#wants(split.ext)) {
        data = this.reader.data();
        if (data === null) {
          this.ended = "truncated";
          return null;
        }
      }
      return { key: split.key, ext: split.ext, member: { offset: next.offset, size: next.size, data } };
    }
  }

  /** The next group, or null at the end of the archive (`ended` says whether it was damaged). */
  next(): MemberGroup | null {
    const first = this.#pending ?? (this.ended === null ? this.#member() : null);
    this.#pending = null;
    if (first === null) return null;
    const group: MemberGroup = { key: first.key, members: new Map([[first.ext, first.member]]) };
    for (;;) {
      const next = this.#member();
      // At a damaged member the group keeps the members read whole before it (as listTar's index does).
      if (next === null) return group;
      if (next.key !== group.key || group.members.has(next.ext)) {
        this.#pending = next;
        return group;
      }
      group.members.set(next.ext, next.member);
    }
  }

  close(): void {
    this.reader.close();
  }
}

/** A ustar archive of (name, data) members, as img2dataset writes them (tests, benchmarks, tools). */
export function tarArchive(members: readonly { name: string; data: Uint8Array }[]): Uint8Array {
  const enc = new TextEncoder();
  let total = 2 * BLOCK;
  for (const m of members) total += BLOCK + Math.ceil(m.data.length / BLOCK) * BLOCK;
  const out = new Uint8Array(total);
  let at = 0;
  for (const m of members) {
    const header = out.subarray(at, at + BLOCK);
    const name = enc.encode(m.name);
    if (name.length > 100) throw new RangeError(`tarArchive: member name over 100 bytes: ${m.name}`);
    header.set(name, 0);
    header.set(enc.encode("0000644\0"), 100);
    header.set(enc.encode("0000000\0"), 108);
    header.set(enc.encode("0000000\0"), 116);
    header.set(enc.encode(m.data.length.toString(8).padStart(11, "0") + "\0"), 124);
    header.set(enc.encode("00000000000\0"), 136);
    header.fill(0x20, 148, 156);
    header[156] = 0x30;
    header.set(enc.encode("ustar\0" + "00"), 257);
    let sum = 0;
    for (const b of header) sum += b;
    header.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    out.set(m.data, at + BLOCK);
    at += BLOCK + Math.ceil(m.data.length / BLOCK) * BLOCK;
  }
  return out;
}
