// launch.ts: `deno task launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]
// [--max-restarts K] -- <train args>`, torchrun's job for this CLI. It starts this node's ranks of `train` with the
// torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT), prefixes
// every output line with `[rank k]`, forwards SIGINT/SIGTERM, and when a rank dies stops the others and restarts the
// whole group (up to K times) from the latest checkpoint (planRestart: an explicit --resume PATH is kept only while
// it verifies and the run has written nothing newer); out of restarts, it exits with the failed rank's status. Ranks
// watch the launcher's pid (DC_LAUNCHER_PID) and stop when it dies, even by SIGKILL (src/train/launcher_link.ts).
// Multi-node: run one launcher per node with the same --nnodes/--master-addr/--master-port and its own --node-rank;
// a failure on one node reaches the others through their collectives, so every node restarts.
import { parseArgs } from "node:util";
import { CheckpointError, verifyCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { LAUNCHER_PID_VARIABLE } from "../src/train/launcher_link.ts";
import { isTorchCheckpoint, openOfficialCheckpoint } from "../src/checkpoint/official_checkpoint.ts";
import { parseTrainOptions } from "../src/train/options.ts";
import { UsageError } from "./usage_error.ts";

const help = `usage: deno task launch --nproc-per-node N [options] -- <train options>

Starts N training ranks on this node (torchrun-style variables), prefixes their output with [rank k], forwards
SIGINT/SIGTERM, and restarts all ranks from the latest checkpoint (--resume auto) when one dies. An explicit
--resume PATH is kept on a restart while PATH verifies and the run has written no newer checkpoint; if it does not
verify, the launcher stops rather than train from scratch. Ranks stop when the launcher dies.

options:
  --nproc-per-node N     ranks on this node (required)
  --nnodes M             nodes in the job (1)
  --node-rank R          this node's index, 0..M-1 (0); global rank = R*N + local rank
  --master-addr A        host of rank 0's rendezvous store (127.0.0.1)
  --master-port P        its port (29500)
  --max-restarts K       restarts of the whole group after a failure (0)
  --grace S              seconds between SIGTERM and SIGKILL when stopping ranks (5)

SLURM: \`srun deno task train ...\` needs no launcher (each task reads SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and
the first host of SLURM_JOB_NODELIST).`;

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  maxRestarts: number;
  graceSeconds: number;
  trainArgs: string[];
}

function integer(name: string, value: string | undefined, fallback: number | undefined, min: number): number {
  if (value === undefined) {
    if (fallback === undefined) throw new UsageError(`--${name} is required (see deno task launch --help)`);
    return fallback;
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer >= ${min}, got '${value}'`);
  return n;
}

export function parseLaunchArgs(args: string[]): LaunchOptions | null {
  const split = args.indexOf("--");
  const own = split < 0 ? args : args.slice(0, split);
  const trainArgs = split < 0 ? [] : args.slice(split + 1);
  let values;
  try {
    ({ values } = parseArgs({
      args: own,
      options: {
        "nproc-per-node": { type: "string" },
        "nnodes": { type: "string" },
        "node-rank": { type: "string" },
        "master-addr": { type: "string" },
        "master-port": { type: "string" },
        "max-restarts": { type: "string" },
        "grace": { type: "string" },
        "help": { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message.split("\n")[0]} (train options go after --)`);
  }
  if (values.help) return null;
  const options: LaunchOptions = {
    nprocPerNode: integer("nproc-per-node", values["nproc-per-node"], undefined, 1),
    nnodes: integer("nnodes", values.nnodes, 1, 1),
    nodeRank: integer("node-rank", values["node-rank"], 0, 0),
    masterAddr: values["master-addr"] ?? "127.0.0.1",
    masterPort: integer("master-port", values["master-port"], 29500, 1),
    maxRestarts: integer("max-restarts", values["max-restarts"], 0, 0),
    graceSeconds: Number(values.grace ?? 5),
    trainArgs,
  };
  if (options.nodeRank >= options.nnodes) {
    throw new UsageError(`--node-rank ${options.nodeRank} must be below --nnodes ${options.nnodes}`);
  }
  if (options.masterPort > 65535) throw new UsageError(`--master-port ${options.masterPort} is out of range`);
  if (!(options.graceSeconds >= 0)) throw new UsageError(`--grace: expected seconds >= 0, got '${values.grace}'`);
  return options;
}

/** The train arguments with any --resume replaced by `--resume <value>` (default: auto, the latest good checkpoint). */
export function resumeArgs(args: readonly string[], value = "auto"): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--resume") {
      i++; // and its value
      continue;
    }
    if (args[i].startsWith("--resume=")) continue;
    out.push(args[i]);
  }
  return [...out, "--resume", value];
}

/** How the ranks restart: their arguments and how they resume, or why they must not restart. */
export type RestartPlan = { args: string[]; resume: string } | { stop: string };

/**
 * The restart after a failure. Without --resume, or with --resume auto, the ranks restart with --resume auto. With
 * an explicit --resume PATH they restart from the newest checkpoint this launch wrote to the output folder (one
 * modified since `startedAtMs` that verifies) when it is past PATH's step; else from PATH itself if PATH verifies;
 * else not at all: --resume auto would find nothing (or another run's files) and train from scratch, which is not
 * what the user asked for.
 */
export function planRestart(trainArgs: readonly string[], startedAtMs: number): RestartPlan {
  let options;
  try {
    options = parseTrainOptions([...trainArgs]);
  } catch {
    return { args: resumeArgs(trainArgs), resume: "--resume auto" }; // the ranks will report the options themselves
  }
  if (options.resume === undefined || options.resume === "auto") {
    return { args: resumeArgs(trainArgs), resume: "--resume auto" };
  }
  const explicit = options.resume;
  const written = newestCheckpointSince(options.outputDir, startedAtMs);
  const checked = verifyResumePath(explicit);
  if (written !== null && ("problem" in checked || written.step > checked.step)) {
    return {
      args: resumeArgs(trainArgs, written.path),
      resume: `--resume ${written.path} (step ${written.step}, the newest checkpoint this launch wrote)`,
    };
  }
  if (!("problem" in checked)) return { args: [...trainArgs], resume: `--resume ${explicit} (verified)` };
  return {
    stop: `--resume ${explicit} does not verify (${checked.problem}) and this launch wrote no checkpoint to ` +
      `resume from, so a restart would train from scratch`,
  };
}

/** The step of a checkpoint given to --resume (-1 for an official .pt, which holds epochs), or why it is unusable. */
function verifyResumePath(path: string): { step: number } | { problem: string } {
  try {
    if (!Deno.statSync(path).isFile) return { problem: "not a regular file" };
    if (isTorchCheckpoint(path)) {
      openOfficialCheckpoint(path).close();
      return { step: -1 };
    }
    return { step: verifyCheckpoint(path).step };
  } catch (error) {
    if (error instanceof CheckpointError) return { problem: error.reason };
    return { problem: (error as Error).message.split("\n")[0] };
  }
}

/** The newest `checkpoint-<step>.safetensors` in dir modified at or after `sinceMs` that verifies, or null. */
function newestCheckpointSince(dir: string, sinceMs: number): { path: string; step: number } | null {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return null;
  }
  const candidates = entries
    .map((e) => ({ e, match: e.isFile ? /^checkpoint-(\d+)\.safetensors$/.exec(e.name) : null }))
    .filter(({ match }) => match !== null)
    .map(({ e, match }) => ({ path: `${dir}/${e.name}`, step: Number(match![1]) }))
    .sort((a, b) => b.step - a.step);
  for (const candidate of candidates) {
    try {
      const modified = Deno.statSync(candidate.path).mtime?.getTime() ?? 0;
      if (modified < sinceMs) continue;
      verifyCheckpoint(candidate.path);
      return candidate;
    } catch {
      // torn or vanished: look at the next one
    }
  }
  return null;
}

/** How a rank ended: its exit code, or the signal that killed it. */
function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `signal ${status.signal}` : `exit status ${status.code}`;
}

/** Writes each complete line of `stream` to `out` with `prefix`; a last line without a newline is flushed at the end. */
async function pipeLines(stream: ReadableStream<Uint8Array>, prefix: string, out: typeof Deno.stdout): Promise<void> {
  const encoder = new TextEncoder();
  let pending = "";
  const write = (line: string): void => {
    const bytes = encoder.encode(`${prefix}${line}\n`);
    let written = 0;
    while (written < bytes.length) written += out.writeSync(bytes.subarray(written));
  };
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let cut: number;
      while ((cut = pending.search(/\r?\n|\r/)) >= 0) {
        const line = pending.slice(0, cut);
        pending = pending.slice(cut + (pending.startsWith("\r\n", cut) ? 2 : 1));
        if (line.length > 0) write(line);
      }
    }
  } catch {
    // The child went away mid-read; what was read is written below.
  }
  if (pending.length > 0) write(pending);
}

interface RankProcess {
  rank: number;
  child: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  output: Promise<void>;
}

/** The command that runs `train` in this same runtime: the CLI module from source, or the compiled binary itself. */
function trainCommand(args: string[]): { command: string; args: string[] } {
  if (Deno.build.standalone) return { command: Deno.execPath(), args: ["train", ...args] };
  const main = new URL("./main.ts", import.meta.url).pathname;
  return { command: Deno.execPath(), args: ["run", "--allow-all", "--unstable-ffi", main, "train", ...args] };
}

function say(line: string): void {
  console.error(`[launch] ${line}`);
}

export async function main(args: string[]): Promise<number> {
  const options = parseLaunchArgs(args);
  if (options === null) {
    console.log(help);
    return 0;
  }
  const world = options.nnodes * options.nprocPerNode;
  // Whole seconds: a file system may keep modification times that coarse.
  const startedAtMs = Math.floor(Date.now() / 1000) * 1000;
  let trainArgs = options.trainArgs;
  let stopSignal: Deno.Signal | null = null;
  let running: RankProcess[] = [];

  const forward = (signal: Deno.Signal) => () => {
    stopSignal = signal;
    say(`${signal}: forwarding to ${running.length} rank(s)`);
    for (const p of running) {
      try {
        p.child.kill(signal);
      } catch {
        // already gone
      }
    }
  };
  const handlers: [Deno.Signal, () => void][] = [["SIGINT", forward("SIGINT")], ["SIGTERM", forward("SIGTERM")]];
  for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);

  try {
    for (let attempt = 0;; attempt++) {
      running = startRanks(options, world, trainArgs, attempt);
      const failure = await firstFailure(running);
      if (failure !== null) await stopAll(running, options.graceSeconds);
      await Promise.all(running.map((p) => p.output));
      running = [];

      if (stopSignal !== null) {
        say(`stopped by ${stopSignal}`);
        return stopSignal === "SIGINT" ? 130 : 143;
      }
      if (failure === null) return 0;
      const what = `rank ${failure.rank} failed (${describeStatus(failure.status)})`;
      if (attempt >= options.maxRestarts) {
        say(
          `${what}; ${options.maxRestarts > 0 ? `no restarts left (${options.maxRestarts} used)` : "not restarting"}`,
        );
        return failure.status.code !== 0 ? failure.status.code : 1;
      }
      const plan = planRestart(options.trainArgs, startedAtMs);
      if ("stop" in plan) {
        say(`${what}; not restarting: ${plan.stop}`);
        return failure.status.code !== 0 ? failure.status.code : 1;
      }
      trainArgs = plan.args;
      say(
        `${what}; restarting all ${options.nprocPerNode} local rank(s) with ${plan.resume} ` +
          `(restart ${attempt + 1} of ${options.maxRestarts})`,
      );
      await new Promise((r) => setTimeout(r, 1000)); // let the old sockets go
    }
  } finally {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  }
}

function startRanks(options: LaunchOptions, world: number, trainArgs: string[], attempt: number): RankProcess[] {
  const out: RankProcess[] = [];
  for (let local = 0; local < options.nprocPerNode; local++) {
    const rank = options.nodeRank * options.nprocPerNode + local;
    const env: Record<string, string> = {
      RANK: String(rank),
      WORLD_SIZE: String(world),
      LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(options.nprocPerNode),
      GROUP_RANK: String(options.nodeRank),
      MASTER_ADDR: options.masterAddr,
      MASTER_PORT: String(options.masterPort),
      TORCHELASTIC_RESTART_COUNT: String(attempt),
      // The rank watches this pid and stops when it is no longer its parent (src/train/launcher_link.ts).
      [LAUNCHER_PID_VARIABLE]: String(Deno.pid),
    };
    // As torchrun: several ranks on one machine would each start one libtorch thread per core.
    if (options.nprocPerNode > 1 && Deno.env.get("OMP_NUM_THREADS") === undefined) env.OMP_NUM_THREADS = "1";
    const { command, args } = trainCommand(trainArgs);
    const child = new Deno.Command(command, { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
    const prefix = `[rank ${rank}] `;
    const output = Promise.all([
      pipeLines(child.stdout, prefix, Deno.stdout),
      pipeLines(child.stderr, prefix, Deno.stderr),
    ]).then(() => {});
    out.push({ rank, child, status: child.status, output });
    say(`rank ${rank} started (pid ${child.pid}${attempt > 0 ? `, restart ${attempt}` : ""})`);
  }
  return out;
}

/** Resolves with the first rank to fail, or null once every rank has exited cleanly. */
function firstFailure(ranks: RankProcess[]): Promise<{ rank: number; status: Deno.CommandStatus } | null> {
  return new Promise((resolve) => {
    let clean = 0;
    for (const p of ranks) {
      p.status.then((status) => {
        if (status.success) {
          if (++clean === ranks.length) resolve(null);
        } else {
          resolve({ rank: p.rank, status });
        }
      });
    }
  });
}

/** SIGTERM to every rank still running, SIGKILL after the grace period. */
async function stopAll(ranks: RankProcess[], graceSeconds: number): Promise<void> {
  const alive = new Set(ranks);
  for (const p of ranks) p.status.then(() => alive.delete(p));
  await new Promise((r) => setTimeout(r, 0));
  for (const p of alive) {
    try {
      p.child.kill("SIGTERM");
    } catch {
      alive.delete(p);
    }
  }
  const deadline = Date.now() + graceSeconds * 1000;
  while (alive.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const p of alive) {
    try {
      p.child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
  }
  await Promise.all(ranks.map((p) => p.status));
}
