// run_lock.ts: one training run per output folder. Two runs writing one folder would interleave checkpoints, metrics
// and summaries; so rank 0 holds an exclusive flock on `<output-dir>/detailclip.lock` for the life of the run, and
// writes its pid, host and start time into it for the message a second run prints. The kernel drops a flock when its
// process dies, however it dies, so a lock left by a killed run is free: the next run takes it over and says whose it
// was. The file is never deleted (deleting a lock file races with a process that has opened but not yet locked it);
// a clean release empties it. The trade: on a network file system without shared locks only the recorded holder
// warns, it cannot exclude.
import { processIsAlive } from "../checkpoint/checkpoint.ts";
import { WriteError } from "../fs/write_error.ts";
import { OptionError } from "./options.ts";

export const LOCK_FILE = "detailclip.lock";

/** The run that holds (or held) an output folder. */
export interface LockHolder {
  pid: number;
  host: string;
  started: string;
}

/** The output folder is held by another live run; the message names its pid and host. */
export class OutputFolderBusyError extends OptionError {
  constructor(message: string, readonly holder: LockHolder | null) {
    super(message);
    this.name = "OutputFolderBusyError";
  }
}

/** A held lock; release it (or `using` it) when the run ends. */
export class RunLock {
  readonly path: string;
  #file: Deno.FsFile | null;

  constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Empties the file and drops the lock; idempotent. */
  release(): void {
    const file = this.#file;
    this.#file = null;
    if (file === null) return;
    try {
      file.truncateSync(0);
      file.syncSync();
    } catch { /* the lock itself is what matters, and closing drops it */ }
    try {
      file.unlockSync();
    } finally {
      file.close();
    }
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * Takes the lock of `dir` (which must exist) or throws OutputFolderBusyError naming the holder. A lock left by a run
 * that ended without releasing it (killed) is taken over, and `say` gets one line naming that run.
 */
export function acquireRunLock(dir: string, say: (line: string) => void): RunLock {
  const path = `${dir}/${LOCK_FILE}`;
  const file = Deno.openSync(path, { read: true, write: true, create: true });
  try {
    if (!file.tryLockSync(true)) {
      const holder = readHolder(file);
      const who = holder === null
        ? "a run that has not recorded itself yet"
        : `pid ${holder.pid} on host ${holder.host}, started ${holder.started}`;
      throw new OutputFolderBusyError(
        `--output-dir ${dir} is in use by another run (${who}); wait for it to end, or choose another --output-dir`,
        holder,
      );
    }
    const previous = readHolder(file);
    if (previous !== null && !(previous.pid === Deno.pid && previous.host === Deno.hostname())) {
      const gone = previous.host === Deno.hostname()
        ? processIsAlive(previous.pid) ? "which no longer holds it" : "which is no longer running"
        : "whose lock is no longer held";
      say(
        `output dir: took over the stale lock ${path} of pid ${previous.pid} on host ${previous.host} ` +
          `(started ${previous.started}), ${gone}`,
      );
    }
    const holder: LockHolder = { pid: Deno.pid, host: Deno.hostname(), started: new Date().toISOString() };
    file.truncateSync(0);
    file.seekSync(0, Deno.SeekMode.Start);
    const bytes = new TextEncoder().encode(JSON.stringify(holder) + "\n");
    try {
      for (let at = 0; at < bytes.byteLength;) at += file.writeSync(bytes.subarray(at));
      file.syncSync();
    } catch (error) {
      throw new WriteError(path, error); // a full disk: the run's first write, named
    }
    return new RunLock(path, file);
  } catch (error) {
    file.close();
    throw error;
  }
}

/** The holder recorded in the lock file, or null when it is empty (released) or unreadable. */
function readHolder(file: Deno.FsFile): LockHolder | null {
  try {
    file.seekSync(0, Deno.SeekMode.Start);
    const buffer = new Uint8Array(4096);
    const n = file.readSync(buffer) ?? 0;
    const parsed = JSON.parse(new TextDecoder().decode(buffer.subarray(0, n)));
    if (typeof parsed?.pid === "number" && typeof parsed?.host === "string") {
      return { pid: parsed.pid, host: parsed.host, started: String(parsed.started ?? "at an unknown time") };
    }
  } catch { /* empty or not ours: nothing to name */ }
  return null;
}
