// logging.ts: what a training run tells people and tools. On a terminal, one self-rewriting progress line (rate,
// ETA, loss terms); elsewhere (CI logs, `| tee`), plain lines at the caller's logging interval, because carriage
// returns turn a log file into one unreadable line. Metrics go to a JSONL file opened in append mode, so a resumed
// run continues it. Only rank 0 speaks: every other rank gets no-op objects, and callers need no `if (rank === 0)`.
import { WriteError } from "../fs/write_error.ts";

import { writeFileAtomic } from "../fs/atomic_write.ts";

/** Options of ProgressBar. Only `total` is required. */
export interface ProgressBarOptions {
  /** The step the run ends at. */
  total: number;
  /** Distributed rank; anything but 0 makes the bar silent. */
  rank?: number;
  /** The step this process started from (a resumed run's step), so rate and ETA count only this process's work. */
  startStep?: number;
  /** Images per optimizer step (global batch × accumulation), for images/s; can also be given per update. */
  imagesPerStep?: number;
  /** Self-rewriting line (true) or plain lines (false); default: whether stdout is a terminal. */
  interactive?: boolean;
  /** Sink for whole lines in plain mode and for println(); default console.log. */
  log?: (line: string) => void;
  /** Raw sink for the self-rewriting line (no newline added); default writes to stdout. */
  write?: (text: string) => void;
  /** Clock in milliseconds (tests inject one); default performance.now. */
  now?: () => number;
  /** Minimum time between two redraws of the terminal line; default 100 ms (about 10 updates/s). */
  minIntervalMs?: number;
  /** Terminal width; the line is cut to fit, since a wrapped line cannot be rewritten. Default: the console's. */
  columns?: number;
}

/** How far back the rate looks: long enough to smooth step-time jitter, short enough to follow a real change. */
const RATE_WINDOW_MS = 30_000;
const BAR_CELLS = 20;
const PARTIAL_BLOCKS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/**
 * Training progress: `update(step, terms)` after each step or logging interval. In plain mode a line is printed for
 * each update that carries loss terms (the caller's interval decides how often); on a terminal the line is redrawn
 * at most every `minIntervalMs`, and the last step is always drawn.
 */
export class ProgressBar {
  readonly total: number;
  readonly enabled: boolean;
  readonly interactive: boolean;
  #imagesPerStep: number | undefined;
  readonly #log: (line: string) => void;
  readonly #write: (text: string) => void;
  readonly #now: () => number;
  readonly #minIntervalMs: number;
  readonly #columns: number;
  /** (time ms, step) samples inside the rate window, oldest first; the first is the start. */
  #samples: [number, number][];
  #terms: Record<string, number> = {};
  #lastDraw = -Infinity;
  #drawn = false;
  #step: number;

  constructor(options: ProgressBarOptions) {
    const { total, rank = 0, startStep = 0 } = options;
    if (!(Number.isFinite(total) && total >= 0)) throw new RangeError(`ProgressBar: total must be >= 0, got ${total}`);
    this.total = total;
    this.enabled = rank === 0;
    this.interactive = options.interactive ?? (this.enabled && Deno.stdout.isTerminal());
    this.#imagesPerStep = options.imagesPerStep;
    this.#log = options.log ?? console.log;
    this.#write = options.write ?? writeStdout;
    this.#now = options.now ?? (() => performance.now());
    this.#minIntervalMs = options.minIntervalMs ?? 100;
    this.#columns = options.columns ?? consoleColumns();
    this.#step = startStep;
    this.#samples = [[this.#now(), startStep]];
  }

  /** Records that `step` steps are done; `terms` (loss values already on the host) replace the shown ones. */
  update(step: number, terms?: Record<string, number>, extra: { imagesPerStep?: number } = {}): void {
    if (!this.enabled) return;
    const t = this.#now();
    this.#step = step;
    if (extra.imagesPerStep !== undefined) this.#imagesPerStep = extra.imagesPerStep;
    if (terms !== undefined) this.#terms = { ...terms };
    this.#samples.push([t, step]);
    while (this.#samples.length > 2 && t - this.#samples[1][0] > RATE_WINDOW_MS) this.#samples.shift();
    if (this.interactive) {
      if (t - this.#lastDraw < this.#minIntervalMs && step < this.total) return;
      this.#lastDraw = t;
      this.#write(`\r${fit(this.#barLine(), this.#columns - 1)}\x1b[K`);
      this.#drawn = true;
    } else if (terms !== undefined) {
      this.#log(this.plainLine());
    }
  }

  /** Prints a whole line without garbling the bar: the bar is cleared, the line printed, the bar redrawn. */
  println(line: string): void {
    if (!this.enabled) return;
    if (this.interactive && this.#drawn) {
      this.#write("\r\x1b[K");
      this.#log(line);
      this.#write(`\r${fit(this.#barLine(), this.#columns - 1)}\x1b[K`);
    } else {
      this.#log(line);
    }
  }

  /** Ends the bar's line so later output starts on a fresh one; idempotent. */
  finish(): void {
    if (!this.enabled || !this.interactive || !this.#drawn) return;
    this.#write(`\r${fit(this.#barLine(), this.#columns - 1)}\x1b[K\n`);
    this.#drawn = false;
  }

  /** Steps per second over the recent window, or null before two samples exist. */
  rate(): number | null {
    const [t0, s0] = this.#samples[0];
    const [t1, s1] = this.#samples[this.#samples.length - 1];
    return t1 > t0 && s1 > s0 ? (s1 - s0) / ((t1 - t0) / 1000) : null;
  }

  /** `step 120/2000 (6.0%) | 3.10 it/s 99.2 img/s | eta 10m05s | loss 9.812 clip 1.020`. */
  plainLine(): string {
    const parts = [`step ${this.#step}/${this.total} (${this.#percent().toFixed(1)}%)`, this.#rateText()];
    parts.push(`eta ${this.#eta()}`);
    const terms = formatTerms(this.#terms);
    if (terms !== "") parts.push(terms);
    return parts.join(" | ");
  }

  #barLine(): string {
    const fraction = this.total > 0 ? Math.min(1, this.#step / this.total) : 1;
    const eighths = Math.round(fraction * BAR_CELLS * 8);
    const full = Math.floor(eighths / 8);
    const bar = ("█".repeat(full) + PARTIAL_BLOCKS[eighths % 8]).padEnd(BAR_CELLS, " ");
    const head = `${this.#percent().toFixed(1).padStart(5)}% |${bar}| ${this.#step}/${this.total}`;
    const terms = formatTerms(this.#terms);
    return `${head} ${this.#rateText()} eta ${this.#eta()}${terms === "" ? "" : ` | ${terms}`}`;
  }

  #percent(): number {
    return this.total > 0 ? Math.min(100, (100 * this.#step) / this.total) : 100;
  }

  #rateText(): string {
    const rate = this.rate();
    if (rate === null) return "-- it/s";
    const images = this.#imagesPerStep === undefined ? "" : ` ${significant(rate * this.#imagesPerStep, 3)} img/s`;
    return `${significant(rate, 3)} it/s${images}`;
  }

  #eta(): string {
    const rate = this.rate();
    const left = Math.max(0, this.total - this.#step);
    if (left === 0) return "0s";
    return rate === null ? "--" : formatDuration(left / rate);
  }
}

/** Options of JsonlWriter. */
export interface JsonlWriterOptions {
  /**
   * A resumed run's step: existing records with a larger `step` (logged after that checkpoint by the run that was
   * killed) are dropped before appending, so each step appears once in the file.
   */
  resumeStep?: number;
}

/**
 * Appends one JSON object per line to a file, each written straight to the OS (no user-space buffer), so a killed
 * run loses nothing it logged. Append mode continues a resumed run's file; a line torn by a kill is ended with a
 * newline first, so it spoils only itself. Non-finite numbers become null (JSON has no NaN). No-op on ranks != 0.
 */
export class JsonlWriter {
  readonly path: string;
  readonly enabled: boolean;
  #file: Deno.FsFile | null = null;

  constructor(path: string, rank = 0, options: JsonlWriterOptions = {}) {
    this.path = path;
    this.enabled = rank === 0;
    if (!this.enabled) return;
    let kind: Deno.FileInfo | null = null;
    try {
      kind = Deno.statSync(path);
    } catch { /* not there yet: created below */ }
    if (kind !== null && !kind.isFile) {
      // a device or a FIFO in its place would be read without end (/dev/zero) or block: refuse it
      throw new WriteError(path, new Error("exists and is not a regular file"));
    }
    try {
      if (options.resumeStep !== undefined) dropRecordsAfter(path, options.resumeStep);
      this.#file = Deno.openSync(path, { append: true, create: true, read: true });
      const size = this.#file.statSync().size;
      if (size > 0) {
        const last = new Uint8Array(1);
        this.#file.seekSync(size - 1, Deno.SeekMode.Start);
        this.#file.readSync(last);
        if (last[0] !== 0x0a) writeAll(this.#file, new Uint8Array([0x0a]));
      }
    } catch (error) {
      this.#file?.close();
      throw new Error(`JsonlWriter ${path}: cannot open for appending: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Appends one record as one line. */
  write(record: Record<string, unknown>): void {
    if (!this.enabled) return;
    if (this.#file === null) throw new Error(`JsonlWriter ${this.path}: write after close`);
    const line = JSON.stringify(record, (_key, value) => (typeof value === "bigint" ? Number(value) : value));
    try {
      writeAll(this.#file, new TextEncoder().encode(line + "\n"));
    } catch (error) {
      throw new WriteError(this.path, error); // a full disk: one line naming the file (a torn line is skipped on read)
    }
  }

  /** Makes the lines written so far durable (fsync); ordinary writes already survive a killed process. */
  sync(): void {
    this.#file?.syncSync();
  }

  /** Idempotent. */
  close(): void {
    const file = this.#file;
    this.#file = null;
    file?.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Parses a JSONL file; lines that are not JSON objects (a torn last line) are counted, not fatal. */
export function readJsonl(path: string): { records: Record<string, unknown>[]; badLines: number } {
  const records: Record<string, unknown>[] = [];
  let badLines = 0;
  for (const line of Deno.readTextFileSync(path).split("\n")) {
    if (line.trim() === "") continue;
    try {
      const value = JSON.parse(line);
      if (typeof value === "object" && value !== null && !Array.isArray(value)) records.push(value);
      else badLines++;
    } catch {
      badLines++;
    }
  }
  return { records, badLines };
}

/** Loss terms as `name value` pairs with 4 significant digits. */
export function formatTerms(terms: Record<string, number>): string {
  return Object.entries(terms).map(([name, value]) => `${name} ${significant(value, 4)}`).join(" ");
}

/** `digits` significant digits; exponent form only where fixed notation would be long or show nothing. */
export function significant(value: number, digits: number): string {
  if (Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 10 ** (digits + 2) || magnitude < 1e-3)) {
    return value.toExponential(digits - 1);
  }
  if (magnitude >= 10 ** digits) return value.toFixed(0);
  return value.toPrecision(digits);
}

/** `45s`, `10m05s`, `3h07m`, `2d04h`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "--";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}

/** Cuts a line to `width` characters (code points), marking the cut. */
function fit(line: string, width: number): string {
  const chars = [...line];
  return chars.length <= width ? line : chars.slice(0, Math.max(0, width - 1)).join("") + "…";
}

/** Rewrites `path` without records whose numeric `step` exceeds `step` (temp file + rename, so a kill is harmless). */
function dropRecordsAfter(path: string, step: number): void {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  const kept = text.split("\n").filter((line) => {
    if (line.trim() === "") return false;
    try {
      const record = JSON.parse(line);
      return !(typeof record?.step === "number" && record.step > step);
    } catch {
      return false; // a torn line
    }
  });
  writeFileAtomic(path, kept.map((line) => line + "\n").join(""));
}

function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  let written = 0;
  while (written < bytes.byteLength) written += file.writeSync(bytes.subarray(written));
}

function writeStdout(text: string): void {
  const bytes = new TextEncoder().encode(text);
  let written = 0;
  try {
    while (written < bytes.byteLength) written += Deno.stdout.writeSync(bytes.subarray(written));
  } catch (error) {
    throw new WriteError("stdout", error);
  }
}

function consoleColumns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 120; // not a terminal; only the plain mode runs then
  }
}
