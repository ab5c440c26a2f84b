// tensorboard.ts: scalar curves in TensorBoard's own event-file format, for `--report-to tensorboard`. A file is a
// sequence of TFRecords (uint64 length, masked CRC-32C of the length, the bytes, masked CRC-32C of the bytes), each
// holding one serialised `tensorflow.Event` protobuf: first {wall_time, file_version: "brain.Event:2"}, then
// {wall_time, step, summary {value {tag, simple_value}}} per logging interval. This is what PyTorch's SummaryWriter
// writes for add_scalar, so TensorBoard (and its EventAccumulator) reads it as it reads any PyTorch run.
//
// Written by hand rather than through an npm package: the format is four protobuf fields and a CRC, and the only npm
// writers of Event protos come with TensorFlow's native binaries (tfjs-node); the TFRecord packages write tf.Example
// only. Trade-offs: scalars only (no images, histograms or hparams), each record appended with one synchronous write
// (a killed run loses nothing that was logged), and every run writes a new file that starts with a SessionLog START,
// which makes TensorBoard drop the older files' points from that step on: a resumed run's abandoned timeline after its
// checkpoint, or all of an earlier run's curves when a fresh run took the folder over (--overwrite).
import { hostname } from "node:os";
import { writeAll } from "../fs/atomic_write.ts";

/** The folder under --output-dir that holds the event files. */
export const TENSORBOARD_DIR = "tensorboard";

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1; // Castagnoli, reflected
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli) of `bytes`, as TFRecord and iSCSI use it; crc32c("123456789") = 0xe3069283. */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 and add a constant, so a CRC over data that holds CRCs stays strong. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length (u64 LE), masked CRC of those 8 bytes, the data, masked CRC of the data. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** A minimal protobuf encoder for the Event fields used here. */
class ProtoWriter {
  #parts: number[] = [];

  #varint(value: bigint): void {
    let v = BigInt.asUintN(64, value);
    while (v >= 0x80n) {
      this.#parts.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.#parts.push(Number(v));
  }

  #tag(field: number, wireType: number): void {
    this.#varint(BigInt((field << 3) | wireType));
  }

  double(field: number, value: number): this {
    this.#tag(field, 1);
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, value, true);
    this.#parts.push(...bytes);
    return this;
  }

  float(field: number, value: number): this {
    this.#tag(field, 5);
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    this.#parts.push(...bytes);
    return this;
  }

  int64(field: number, value: number): this {
    this.#tag(field, 0);
    this.#varint(BigInt(value));
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.#tag(field, 2);
    this.#varint(BigInt(value.length));
    this.#parts.push(...value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.#parts);
  }
}

// Field numbers of tensorflow/core/util/event.proto and tensorflow/core/framework/summary.proto.
const EVENT = { wallTime: 1, step: 2, fileVersion: 3, summary: 5, sessionLog: 7 } as const;
const SUMMARY_VALUE = 1;
const VALUE = { tag: 1, simpleValue: 2 } as const;
const SESSION_LOG_STATUS = 1;
const SESSION_LOG_START = 1;

/** A serialised Event holding one scalar summary per entry of `scalars`. */
export function scalarEvent(step: number, scalars: Record<string, number>, wallTime: number): Uint8Array {
  const summary = new ProtoWriter();
  for (const [tag, value] of Object.entries(scalars)) {
    summary.bytes(SUMMARY_VALUE, new ProtoWriter().string(VALUE.tag, tag).float(VALUE.simpleValue, value).finish());
  }
  return new ProtoWriter().double(EVENT.wallTime, wallTime).int64(EVENT.step, step)
    .bytes(EVENT.summary, summary.finish()).finish();
}

/** Appends scalar events to one new event file under `dir`; `enabled: false` (ranks > 0) gives a no-op writer. */
export class TensorBoardWriter {
  readonly path: string | null;
  #file: Deno.FsFile | null = null;
  readonly #now: () => number;

  /**
   * `resumeStep`: the step of the checkpoint a resumed run starts from (0: a fresh run). TensorBoard then discards the
   * older files' points after it (a fresh run: all of them), as metrics.jsonl drops its records after it.
   */
  constructor(dir: string, options: { enabled?: boolean; resumeStep?: number; now?: () => number } = {}) {
    this.#now = options.now ?? (() => Date.now() / 1000);
    if (options.enabled === false) {
      this.path = null;
      return;
    }
    Deno.mkdirSync(dir, { recursive: true });
    const seconds = Math.floor(this.#now());
    // PyTorch's name (events.out.tfevents.<time>.<host>.<pid>.<n>): TensorBoard lists files whose name holds "tfevents".
    let path = "";
    for (let n = 0;; n++) {
      path = `${dir}/events.out.tfevents.${seconds}.${hostname()}.${Deno.pid}.${n}`;
      try {
        this.#file = Deno.openSync(path, { write: true, createNew: true });
        break;
      } catch (error) {
        if (!(error instanceof Deno.errors.AlreadyExists)) {
          throw new Error(`tensorboard: cannot create ${path}: ${(error as Error).message}`, { cause: error });
        }
      }
    }
    this.path = path;
    this.#append(
      new ProtoWriter().double(EVENT.wallTime, this.#now()).string(EVENT.fileVersion, "brain.Event:2").finish(),
    );
    // EventAccumulator purges every point at or after a START's step; the points up to a resumed checkpoint are the
    // same in both timelines (resume is exact), so they stay.
    const resumeStep = options.resumeStep ?? 0;
    const start = new ProtoWriter().int64(SESSION_LOG_STATUS, SESSION_LOG_START).finish();
    this.#append(
      new ProtoWriter().double(EVENT.wallTime, this.#now()).int64(EVENT.step, resumeStep === 0 ? 0 : resumeStep + 1)
        .bytes(EVENT.sessionLog, start).finish(),
    );
  }

  /** Writes one event at `step` with every finite entry of `scalars` (tag → value). */
  scalars(step: number, scalars: Record<string, number>): void {
    if (this.#file === null) return;
    const finite = Object.fromEntries(Object.entries(scalars).filter(([, v]) => Number.isFinite(v)));
    if (Object.keys(finite).length === 0) return;
    this.#append(scalarEvent(step, finite, this.#now()));
  }

  #append(event: Uint8Array): void {
    writeAll(this.#file!, tfRecord(event));
  }

  /** Idempotent. */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
