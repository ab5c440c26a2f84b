// output_safety_test.ts: nothing a user already has is lost. The atomic writer keeps the previous file whole when a
// write fails and leaves no temp file; an output that is one of the command's inputs (same path, a symlink, a hard
// link) is refused by export, viz, eval and data bpe with the input untouched; the output folder's lock refuses a
// second run while the first is alive (naming its pid and host) and is taken over from a dead one; a new run never
// prunes another run's checkpoints unless --overwrite says so.
import { run } from "../cli/main.ts";
import { OutputWriteError, writeFileAtomic } from "../src/fs/atomic_write.ts";
import { inputAt, outputOverInputProblem } from "../src/fs/same_file.ts";
import { ProcessGroup } from "../src/torch/dist.ts";
import { listCheckpoints, verifyCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { acquireRunLock, LOCK_FILE, OutputFolderBusyError } from "../src/train/run_lock.ts";
import { saveUntrainedCheckpoint } from "./eval_checkpoint.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;
const SMALL = ["--synthetic-size", "64", "--batch-size", "8", "--epochs", "1", "--eval-size", "0", "--threads", "1"];

function trainCommand(args: string[], env: Record<string, string> = {}): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-ffi", main, "train", ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  });
}

function runTrain(args: string[]): { code: number; out: string } {
  const result = trainCommand(args).outputSync();
  const decoder = new TextDecoder();
  return { code: result.code, out: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
}

/** run() of cli/main.ts with its output captured. */
async function runCli(argv: string[]): Promise<{ code: number; errors: string[] }> {
  const errors: string[] = [];
  const { log, error } = console;
  console.log = () => {};
  console.error = (...parts: unknown[]) => errors.push(parts.join(" "));
  try {
    return { code: await run(argv), errors };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Name -> bytes of every file in `dir` (not recursive) but the lock file, which any run may create. */
function snapshot(dir: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isFile && entry.name !== LOCK_FILE) out.set(entry.name, Deno.readFileSync(`${dir}/${entry.name}`));
  }
  return out;
}

function assertSameFiles(actual: Map<string, Uint8Array>, expected: Map<string, Uint8Array>, what: string): void {
  assertEquals([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: file names`);
  for (const [name, bytes] of expected) {
    const got = actual.get(name)!;
    assert(got.length === bytes.length && got.every((b, i) => b === bytes[i]), `${what}: ${name} changed`);
  }
}

function withDir(name: string, fn: (dir: string) => void | Promise<void>): void {
  Deno.test(name, async () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_outsafe_" });
    try {
      await fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

// ---- the atomic writer ------------------------------------------------------------------------------------------

withDir("writeFileAtomic: a failed write keeps the previous file whole and leaves no temp file", (dir) => {
  const path = `${dir}/plot.png`;
  writeFileAtomic(path, "first version");
  assertEquals(Deno.readTextFileSync(path), "first version");
  // A disk that fills up half way: the stream writes some bytes, then the file system fails.
  const error = assertThrows(
    () =>
      writeFileAtomic(path, (file) => {
        file.writeSync(new TextEncoder().encode("half of the new"));
        throw new Deno.errors.WriteZero("No space left on device (os error 28)");
      }),
    OutputWriteError,
    [path, "No space left on device", "untouched"],
  );
  assertEquals(error.path, path);
  assertEquals(Deno.readTextFileSync(path), "first version");
  assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["plot.png"], "no temp file left");
  // An error of the writer's own (not the file system's) propagates as it is, also without a temp file.
  assertThrows(
    () =>
      writeFileAtomic(path, () => {
        throw new RangeError("bad row 7");
      }),
    RangeError,
    ["bad row 7"],
  );
  assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["plot.png"]);
  writeFileAtomic(path, new Uint8Array([1, 2, 3]));
  assertEquals([...Deno.readFileSync(path)], [1, 2, 3]);
});

withDir("writeFileAtomic: a symlink at the output is replaced, never written through", (dir) => {
  Deno.writeTextFileSync(`${dir}/precious.txt`, "keep me");
  Deno.symlinkSync(`${dir}/precious.txt`, `${dir}/out.txt`);
  writeFileAtomic(`${dir}/out.txt`, "new");
  assertEquals(Deno.readTextFileSync(`${dir}/precious.txt`), "keep me");
  assert(!Deno.lstatSync(`${dir}/out.txt`).isSymlink, "the link was replaced by a file");
});

// ---- outputs that are inputs ------------------------------------------------------------------------------------

withDir(
  "inputAt: the same path, a relative spelling, a symlink and a hard link are the input; others are not",
  (dir) => {
    const input = `${dir}/in.txt`;
    Deno.writeTextFileSync(input, "x");
    Deno.symlinkSync(input, `${dir}/link.txt`);
    Deno.linkSync(input, `${dir}/hard.txt`);
    Deno.writeTextFileSync(`${dir}/other.txt`, "x");
    const inputs = [{ flag: "--input", path: input }];
    for (const out of [input, `${dir}/./in.txt`, `${dir}/link.txt`, `${dir}/hard.txt`]) {
      assertEquals(inputAt(out, inputs)?.flag, "--input", out);
    }
    assertEquals(inputAt(`${dir}/other.txt`, inputs), null);
    assertEquals(inputAt(`${dir}/missing.txt`, inputs), null);
    const line = outputOverInputProblem("--out", `${dir}/link.txt`, inputs)!;
    assert(line.includes("--out") && line.includes("--input") && line.includes("same file"), line);
  },
);

withDir(
  "export, viz, eval and data bpe refuse an output that is one of their inputs; the input is untouched",
  async (dir) => {
    const checkpoint = saveUntrainedCheckpoint(dir);
    const captions = `${dir}/captions.txt`;
    Deno.writeTextFileSync(captions, "a red circle\na blue square\n");
    Deno.symlinkSync(checkpoint, `${dir}/alias.safetensors`);
    const before = snapshot(dir);
    const cases: string[][] = [
      ["export", "backbone", "--checkpoint", checkpoint, "--out", checkpoint],
      ["export", "backbone", "--checkpoint", checkpoint, "--out", `${dir}/alias.safetensors`],
      ["viz", "tokens", "--checkpoint", checkpoint, "--image", captions, "--out", checkpoint],
      ["eval", "retrieval", "--checkpoint", checkpoint, "--out", checkpoint],
      ["data", "bpe", "--input", captions, "--vocab-size", "600", "--out", captions],
    ];
    for (const argv of cases) {
      const { code, errors } = await runCli(argv);
      assertEquals(code, 2, argv.join(" "));
      assertEquals(errors.length, 1, errors.join("\n"));
      assert(errors[0].includes("same file as"), errors[0]);
    }
    assertSameFiles(snapshot(dir), before, "inputs");
  },
);

withDir("golden --out equal to --ref is refused: it would compare our numbers with themselves", async (dir) => {
  const ref = `${dir}/ref`;
  Deno.mkdirSync(ref);
  const fixture = new URL("./fixtures/golden/tiny", import.meta.url).pathname;
  for (const entry of Deno.readDirSync(fixture)) Deno.copyFileSync(`${fixture}/${entry.name}`, `${ref}/${entry.name}`);
  const before = snapshot(ref);
  const { code, errors } = await runCli(["golden", "--ref", ref, "--out", `${dir}/./ref`]);
  assertEquals(code, 2, errors.join("\n"));
  assert(errors.length === 1 && errors[0].includes("same file as --ref"), errors.join("\n"));
  assertSameFiles(snapshot(ref), before, "the reference");
});

// ---- the output folder's lock -----------------------------------------------------------------------------------

withDir("a run into a folder held by a live run stops with one line naming the holder's pid and host", (dir) => {
  const lock = acquireRunLock(dir, () => {});
  try {
    // The same process again: flock excludes a second open file description, as it excludes another process.
    const error = assertThrows(() => acquireRunLock(dir, () => {}), OutputFolderBusyError, [`pid ${Deno.pid}`]);
    assertEquals(error.holder?.host, Deno.hostname());
    const before = snapshot(dir);
    const second = runTrain([...SMALL, "--max-steps", "2", "--output-dir", dir]);
    assertEquals(second.code, 2, second.out);
    assertEquals(second.out.trim().split("\n").length, 1, second.out);
    assert(second.out.includes(`pid ${Deno.pid} on host ${Deno.hostname()}`), second.out);
    assertSameFiles(snapshot(dir), before, "the held folder");
  } finally {
    lock.release();
  }
  assertEquals(Deno.readTextFileSync(`${dir}/${LOCK_FILE}`), "", "a released lock is empty");
});

withDir("a lock left by a dead process is taken over, and the run says whose it was", async (dir) => {
  // A process that has exited and been reaped: its pid names no process, as after a kill -9 of a run.
  const dead = new Deno.Command("true", { stdout: "null", stderr: "null" }).spawn();
  await dead.status;
  const started = "2026-01-01T00:00:00.000Z";
  const holder = { pid: dead.pid, host: Deno.hostname(), started };
  Deno.writeTextFileSync(`${dir}/${LOCK_FILE}`, JSON.stringify(holder) + "\n");
  const runOut = runTrain([...SMALL, "--max-steps", "2", "--output-dir", dir]);
  assertEquals(runOut.code, 0, runOut.out);
  assert(runOut.out.includes("took over the stale lock"), runOut.out);
  assert(runOut.out.includes(`pid ${dead.pid} on host ${Deno.hostname()}`), runOut.out);
  assert(runOut.out.includes("no longer running"), runOut.out);
});

Deno.test("two concurrent runs into one folder: the second refuses at once, the first finishes with its files intact", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_outsafe_two_" });
  try {
    const first = trainCommand([...SMALL, "--epochs", "20", "--max-steps", "60", "--output-dir", dir]).spawn();
    const firstOut = new Response(first.stdout).text();
    const firstErr = new Response(first.stderr).text();
    // Wait until the first run has recorded itself in the lock.
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      let text = "";
      try {
        text = Deno.readTextFileSync(`${dir}/${LOCK_FILE}`);
      } catch { /* not created yet */ }
      if (text.includes(`"pid":${first.pid}`)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const second = runTrain([...SMALL, "--epochs", "20", "--max-steps", "60", "--output-dir", dir]);
    const status = await first.status;
    const out = (await firstOut) + (await firstErr);
    assertEquals(second.code, 2, second.out);
    assert(second.out.includes(`pid ${first.pid} on host`), second.out);
    assertEquals(status.code, 0, out);
    const checkpoints = listCheckpoints(dir);
    assertEquals(checkpoints[0].step, 60, "the first run's last checkpoint");
    for (const { path } of checkpoints) verifyCheckpoint(path);
    const summary = JSON.parse(Deno.readTextFileSync(`${dir}/summary.json`));
    assertEquals(summary.steps, 60);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- another run's checkpoints ----------------------------------------------------------------------------------

withDir(
  "a rerun without --resume into an old run's folder refuses and deletes nothing; --overwrite replaces it",
  (dir) => {
    const first = runTrain([...SMALL, "--max-steps", "3", "--save-freq", "1", "--output-dir", dir]);
    assertEquals(first.code, 0, first.out);
    const before = snapshot(dir);

    // The case: a shorter new run would have pruned checkpoint-3 as "abandoned".
    const rerun = runTrain([...SMALL, "--max-steps", "1", "--output-dir", dir]);
    assertEquals(rerun.code, 2, rerun.out);
    assertEquals(rerun.out.trim().split("\n").length, 1, rerun.out);
    assert(rerun.out.includes("--resume auto") && rerun.out.includes("--overwrite"), rerun.out);
    // With --resume auto but other identity options (another seed): another run's files too.
    const other = runTrain([...SMALL, "--max-steps", "4", "--seed", "7", "--resume", "auto", "--output-dir", dir]);
    assertEquals(other.code, 2, other.out);
    assert(other.out.includes("--seed 0 (this run: 7)"), other.out);
    assertSameFiles(snapshot(dir), before, "the old run's folder");

    const replaced = runTrain([...SMALL, "--max-steps", "1", "--overwrite", "--output-dir", dir]);
    assertEquals(replaced.code, 0, replaced.out);
    assert(
      replaced.out.includes("overwrite: removed 3 checkpoint(s) and metrics.jsonl, summary.json, loss_curve.svg"),
      replaced.out,
    );
    assertEquals(listCheckpoints(dir).map((c) => c.step), [1]);
  },
);

withDir("--resume auto with the same identity continues the run in its own folder", (dir) => {
  const first = runTrain([...SMALL, "--max-steps", "2", "--output-dir", dir]);
  assertEquals(first.code, 0, first.out);
  const resumed = runTrain([...SMALL, "--max-steps", "3", "--resume", "auto", "--output-dir", dir]);
  assertEquals(resumed.code, 0, resumed.out);
  assert(resumed.out.includes("at step 2"), resumed.out);
  assertEquals(listCheckpoints(dir).map((c) => c.step), [3, 2]);
});

withDir(
  "a run killed before its first checkpoint left metrics: a fresh run refuses rather than restart them",
  (dir) => {
    Deno.writeTextFileSync(`${dir}/metrics.jsonl`, '{"type":"interval","step":10,"loss":3.5}\n');
    const before = snapshot(dir);
    const rerun = runTrain([...SMALL, "--max-steps", "1", "--output-dir", dir]);
    assertEquals(rerun.code, 2, rerun.out);
    assert(rerun.out.includes("metrics.jsonl of an earlier run"), rerun.out);
    assertSameFiles(snapshot(dir), before, "the earlier run's metrics");
  },
);

Deno.test({
  name: "two Gloo ranks into an old run's folder: both stop with rank 0's line, nothing is deleted",
  ignore: !ProcessGroup.available("gloo"),
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_outsafe_dist_" });
    try {
      const first = runTrain([...SMALL, "--max-steps", "2", "--output-dir", dir]);
      assertEquals(first.code, 0, first.out);
      const before = snapshot(dir);
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = String((listener.addr as Deno.NetAddr).port);
      listener.close();
      const env = (rank: number) => ({
        RANK: String(rank),
        WORLD_SIZE: "2",
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: port,
      });
      const args = [...SMALL, "--batch-size", "4", "--max-steps", "1", "--dist-timeout", "60", "--output-dir", dir];
      const results = await Promise.all([0, 1].map((rank) => trainCommand(args, env(rank)).output()));
      const decoder = new TextDecoder();
      for (const [rank, r] of results.entries()) {
        const out = decoder.decode(r.stdout) + decoder.decode(r.stderr);
        assertEquals(r.code, 2, `rank ${rank}: ${out}`);
        assert(out.includes("of an earlier run"), `rank ${rank}: ${out}`);
      }
      assertSameFiles(snapshot(dir), before, "the old run's folder");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
