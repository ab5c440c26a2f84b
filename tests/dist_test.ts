// dist_test.ts: data-parallel training over c10d/Gloo with two ranks on 127.0.0.1 (random free ports), as a user
// runs it: collectives against hand-computed values; the gather-with-gradient against the single-process gradient;
// 2 ranks × batch b against 1 rank × batch 2b (with accumulation); a killed rank and a stuck rank making the other
// fail with a message naming it within the timeout; the launcher restarting after kill -9 and ending bitwise equal to
// an uninterrupted run; two "nodes" (two launchers) training together; mismatched options reported by name; and the
// pure parts (SLURM host lists, variables, URLs, restart arguments).
import { parseLaunchArgs, resumeArgs } from "../cli/launch.ts";
import { expandNodeList, parseDistUrl, ProcessGroup, resolveDistSpec } from "../src/torch/dist.ts";
import { loadCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { cosineValue } from "../src/train/schedules.ts";
import { assert, assertClose, assertEquals, assertThrows } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;
const worker = new URL("./dist_worker.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

// Per-rank batch 4 with 2 accumulation micro-steps: 16 optimizer steps per epoch of 256 at world 2 (and at world 1
// with batch 8). The lr warms up over that epoch towards the synthetic recipe's 2e-3.
const STEPS = 8;
const TRAIN = [
  "--synthetic-size",
  "256",
  "--update-freq",
  "2",
  "--epochs",
  "2",
  "--max-steps",
  String(STEPS),
  "--save-freq",
  "2",
  "--eval-size",
  "0",
  "--print-freq",
  "2",
  "--threads",
  "1",
  "--keep-last",
  "10",
];
const PER_RANK_BATCH = ["--batch-size", "4"];

// A native library built without Gloo (e.g. against a torch wheel that ships no gloo headers) cannot run ranks on
// the CPU: those tests are skipped with one line, the pure-TypeScript ones still run. CI, whose Debian build must
// have Gloo, sets DETAILCLIP_REQUIRE_GLOO=1 so that a lost backend fails instead of skipping.
const glooMissing = (() => {
  if (ProcessGroup.available("gloo")) return false;
  if (Deno.env.get("DETAILCLIP_REQUIRE_GLOO") === "1") {
    throw new Error("DETAILCLIP_REQUIRE_GLOO=1 but the native library was built without the Gloo backend");
  }
  console.warn("dist tests: the native library was built without the Gloo backend; multi-rank tests are skipped");
  return true;
})();

/** A test that starts Gloo ranks. */
function glooTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: glooMissing, fn });
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function rankEnv(rank: number, world: number, port: number): Record<string, string> {
  return { RANK: String(rank), WORLD_SIZE: String(world), MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) };
}

function spawn(args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
}

function trainProcess(args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return spawn(["run", "--allow-all", "--unstable-ffi", main, "train", ...args], env);
}

async function finish(child: Deno.ChildProcess): Promise<{ code: number; signal: string | null; out: string }> {
  const result = await child.output();
  return {
    code: result.code,
    signal: result.signal,
    out: decoder.decode(result.stdout) + decoder.decode(result.stderr),
  };
}

/** Runs `world` ranks of `train` (torchrun variables, no launcher) and waits for all of them. */
async function trainRanks(world: number, args: string[]): Promise<{ code: number; out: string }[]> {
  const port = freePort();
  const children = Array.from({ length: world }, (_, r) => trainProcess(args, rankEnv(r, world, port)));
  return await Promise.all(children.map(finish));
}

function checkpointPath(dir: string, step: number): string {
  return `${dir}/checkpoint-${String(step).padStart(8, "0")}.safetensors`;
}

/** Model parameters and buffers plus the iBOT centers of a checkpoint, as float arrays. */
function trainedState(path: string): Map<string, { shape: number[]; values: Float64Array; bytes: Uint8Array }> {
  const { tensors } = loadCheckpoint(path);
  const out = new Map<string, { shape: number[]; values: Float64Array; bytes: Uint8Array }>();
  for (const [name, t] of tensors) {
    if (name.startsWith("model.") || name.startsWith("ibot.") || name.startsWith("optimizer.")) {
      const values = Float64Array.from(t.to({ dtype: "float64" }).toArray() as ArrayLike<number>);
      out.set(name, { shape: t.shape, values, bytes: t.toBytes() });
    }
    t.dispose();
  }
  return out;
}

function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      if (predicate()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 20);
    };
    poll();
  });
}

function hasCheckpoint(dir: string): boolean {
  try {
    return [...Deno.readDirSync(dir)].some((e) => /^checkpoint-\d+\.safetensors$/.test(e.name));
  } catch {
    return false;
  }
}

// The uninterrupted 2-rank run, shared by the equivalence, restart and two-node tests.
let twoRankDir: string | null = null;
async function twoRankRun(): Promise<string> {
  if (twoRankDir !== null) return twoRankDir;
  const dir = Deno.makeTempDirSync({ prefix: "dc_dist_2r_" });
  const results = await trainRanks(2, [...TRAIN, ...PER_RANK_BATCH, "--output-dir", dir]);
  results.forEach((r, rank) => assertEquals(r.code, 0, `rank ${rank}: ${r.out}`));
  twoRankDir = dir;
  return dir;
}

function assertBitwiseEqual(pathA: string, pathB: string, what: string): void {
  const a = trainedState(pathA), b = trainedState(pathB);
  assertEquals([...a.keys()].sort(), [...b.keys()].sort(), `${what}: tensor names`);
  for (const [name, ta] of a) {
    const tb = b.get(name)!;
    assert(
      ta.bytes.length === tb.bytes.length && ta.bytes.every((x, i) => x === tb.bytes[i]),
      `${what}: ${name} differs`,
    );
  }
}

Deno.test("dist: SLURM host lists, launcher variables, URLs and restart arguments", () => {
  assertEquals(expandNodeList("node[01-04],other"), ["node01", "node02", "node03", "node04", "other"]);
  assertEquals(expandNodeList("gpu[7,9-10]"), ["gpu7", "gpu9", "gpu10"]);
  assertEquals(expandNodeList("r[1-2]n[08-09]"), ["r1n08", "r1n09", "r2n08", "r2n09"]);
  assertEquals(expandNodeList("solo"), ["solo"]);
  assertThrows(() => expandNodeList("node[01-04"), Error, ["unbalanced"]);

  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assertEquals(resolveDistSpec({ env: env({}) }).world, 1);
  const torchrun = resolveDistSpec({
    env: env({ RANK: "3", WORLD_SIZE: "4", LOCAL_RANK: "1", MASTER_ADDR: "10.0.0.2", MASTER_PORT: "1234" }),
  });
  assertEquals(
    [torchrun.rank, torchrun.world, torchrun.localRank, torchrun.masterAddr, torchrun.masterPort, torchrun.source],
    [3, 4, 1, "10.0.0.2", 1234, "torchrun"],
  );
  const slurm = resolveDistSpec({
    env: env({ SLURM_PROCID: "5", SLURM_NTASKS: "8", SLURM_LOCALID: "1", SLURM_JOB_NODELIST: "node[03-06],x" }),
  });
  assertEquals(
    [slurm.rank, slurm.world, slurm.localRank, slurm.masterAddr, slurm.masterPort, slurm.source],
    [5, 8, 1, "node03", 29500, "slurm"],
  );
  const url = resolveDistSpec({ url: "tcp://10.1.2.3:4567", env: env({ SLURM_PROCID: "0", SLURM_NTASKS: "2" }) });
  assertEquals([url.masterAddr, url.masterPort, url.source], ["10.1.2.3", 4567, "url"]);
  assertEquals(parseDistUrl("tcp://[::1]:80"), { host: "::1", port: 80 });
  assertThrows(() => parseDistUrl("http://a:1"), Error, ["tcp://host:port"]);
  assertThrows(() => resolveDistSpec({ env: env({ RANK: "2", WORLD_SIZE: "2" }) }), Error, ["RANK=2"]);
  assertThrows(() => resolveDistSpec({ url: "tcp://a:1", env: env({}) }), Error, ["RANK and WORLD_SIZE"]);

  assertEquals(resumeArgs(["--lr", "1", "--resume", "x.safetensors", "--epochs", "2"]), [
    "--lr",
    "1",
    "--epochs",
    "2",
    "--resume",
    "auto",
  ]);
  const launch = parseLaunchArgs(["--nproc-per-node", "2", "--nnodes", "2", "--node-rank", "1", "--", "--lr", "1"])!;
  assertEquals([launch.nprocPerNode, launch.nnodes, launch.nodeRank, launch.trainArgs], [2, 2, 1, ["--lr", "1"]]);
  assertThrows(() => parseLaunchArgs(["--nnodes", "2"]), Error, ["--nproc-per-node"]);
  assertThrows(() => parseLaunchArgs(["--nproc-per-node", "1", "--nnodes", "2", "--node-rank", "2"]), Error, [
    "--node-rank",
  ]);
});

glooTest("dist: collectives and the gather with gradient on two Gloo ranks match hand-computed values", async () => {
  const port = freePort();
  const results = await Promise.all(
    [0, 1].map((r) => finish(spawn(["run", "--allow-all", "--unstable-ffi", worker], rankEnv(r, 2, port)))),
  );
  for (const [rank, result] of results.entries()) {
    assertEquals(result.code, 0, `rank ${rank}: ${result.out}`);
    const got = JSON.parse(result.out.trim().split("\n").at(-1)!);
    assertEquals(got.rank, rank);
    // Rank r held [1, 10, -1]·(r+1).
    assertEquals(got.all_reduce_sum, [3, 30, -3]);
    assertEquals(got.all_reduce_avg, [1.5, 15, -1.5]);
    assertEquals(got.all_reduce_max, [2, 20, -1]);
    assertEquals(got.all_reduce_min, [1, 10, -2]);
    assertEquals(got.all_reduce_sum_int64, [3, 30, -3]);
    assertEquals(got.all_reduce_bf16, [3, 30, -3]);
    assertEquals(got.all_reduce_transposed, [3, 6, 9, 12, 15, 18]);
    // Broadcast from rank 1 of three tensors (two dtypes) in 16-byte buckets.
    assertEquals(got.broadcast, [[1, 1, 1], [101, 201, 301, 401, 501], [1.5]]);
    assertEquals(got.all_gather, { shape: [4, 2], values: [0, 0, 0, 0, 1, 1, 1, 1] });
    // Means of (r+1)·[1,2,3,4], of (r+1) and of {6 on rank 0, no gradient (zeros) on rank 1}.
    assertEquals(got.average_grads, [[1.5, 3, 4.5, 6], [1.5, 1.5, 1.5, 1.5, 1.5, 1.5], [3, 3]]);
    // The gathered CLIP loss: rank r's gradient / world equals rows [rB, (r+1)B) of the single-process gradient.
    const { grad, reference, loss } = got.gather_with_grad;
    for (let i = 0; i < 3; i++) assertClose(grad[i], reference[i], { atol: 1e-6, rtol: 1e-5, message: `input ${i}` });
    assertClose(loss[0], loss[1], { atol: 1e-6, rtol: 1e-6, message: "mean loss over ranks vs the whole batch" });
  }
});

glooTest("dist: 2 ranks × batch 4 train to the parameters of 1 rank × batch 8 (with accumulation)", async () => {
  const one = Deno.makeTempDirSync({ prefix: "dc_dist_1r_" });
  const single = await finish(trainProcess([...TRAIN, "--batch-size", "8", "--output-dir", one]));
  assertEquals(single.code, 0, single.out);
  const two = await twoRankRun();
  const a = trainedState(checkpointPath(one, STEPS));
  const b = trainedState(checkpointPath(two, STEPS));
  const halfway = trainedState(checkpointPath(one, STEPS / 2));

  // Tolerance. The two runs compute the same sums in a different order (a 2B-row matrix product vs two B-row ones
  // joined by a gather and an all-reduce; a mean of 2B rows vs the mean of two means), so gradients agree to float32
  // rounding (~1e-7 relative), and AdamW's normalised steps keep parameters within ~1e-7 per step: 1e-5 leaves room.
  // The exception is the key bias of every attention layer (rows [E, 2E) of qkv.bias / in_proj_bias): softmax is
  // invariant to it, so its true gradient is exactly 0 and what backward returns is rounding noise, which Adam's
  // m/sqrt(v) turns into steps of up to ±lr in either direction. Those entries (and the EMA teacher's copies, which
  // follow them at 1 - momentum) are bounded by 2·Σ lr instead; they never feed back into any other value.
  const schedule = { base: 2e-3, final: 1e-5, totalSteps: 32, warmupSteps: 16, warmupStart: 1e-6 };
  let lrSum = 0;
  for (let s = 0; s < STEPS; s++) lrSum += cosineValue(schedule, s);
  let worst = 0, worstName = "", moved = 0, keyBiasWorst = 0;
  for (const [name, ta] of a) {
    if (name.startsWith("optimizer.")) continue; // moments of the noise-driven key biases differ by design
    const tb = b.get(name)!;
    assertEquals(tb.shape, ta.shape, name);
    const keyBias = /attn\.(qkv\.bias|in_proj_bias)$/.test(name);
    const E = ta.values.length / 3;
    for (let i = 0; i < ta.values.length; i++) {
      const diff = Math.abs(ta.values[i] - tb.values[i]);
      if (keyBias && i >= E && i < 2 * E) {
        keyBiasWorst = Math.max(keyBiasWorst, diff);
        continue;
      }
      if (diff > worst) [worst, worstName] = [diff, `${name}[${i}]`];
    }
    const h = halfway.get(name)!.values;
    for (let i = 0; i < h.length; i++) moved = Math.max(moved, Math.abs(ta.values[i] - h[i]));
  }
  assert(worst <= 1e-5, `2-rank vs 1-rank: ${worstName} differs by ${worst.toExponential(2)} (> 1e-5)`);
  assert(keyBiasWorst <= 2 * lrSum, `key biases differ by ${keyBiasWorst} > 2·Σlr = ${2 * lrSum}`);
  assert(moved > 100 * 1e-5, `the parameters moved only ${moved} in ${STEPS / 2} steps: the comparison says nothing`);
  Deno.removeSync(one, { recursive: true });
});

glooTest("dist: a killed rank makes the other exit within the timeout, naming the lost rank", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_dist_kill_" });
  const port = freePort();
  const args = [...TRAIN, ...PER_RANK_BATCH, "--epochs", "20", "--max-steps", "300", "--output-dir", dir];
  const timeout = 20;
  const ranks = [0, 1].map((r) => trainProcess([...args, "--dist-timeout", String(timeout)], rankEnv(r, 2, port)));
  const results = ranks.map(finish);
  await waitFor(() => hasCheckpoint(dir), 120_000, "the first checkpoint");
  const killedAt = Date.now();
  ranks[1].kill("SIGKILL");
  const survivor = await results[0];
  const seconds = (Date.now() - killedAt) / 1000;
  await results[1];
  assertEquals(survivor.code, 4, survivor.out);
  assert(seconds < timeout, `rank 0 took ${seconds} s to notice (timeout ${timeout} s)`);
  assert(/lost rank 1\b/.test(survivor.out), `the message names rank 1: ${survivor.out}`);
  assert(!/\bat .*\.ts:\d+|c10::|\.cpp:\d+/.test(survivor.out), `no stack or C++ trace: ${survivor.out}`);
  Deno.removeSync(dir, { recursive: true });
});

glooTest("dist: a stuck rank makes the other fail at the collective timeout, naming it", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_dist_stuck_" });
  const port = freePort();
  const args = [...TRAIN, ...PER_RANK_BATCH, "--epochs", "20", "--max-steps", "300", "--output-dir", dir];
  const timeout = 8;
  const ranks = [0, 1].map((r) => trainProcess([...args, "--dist-timeout", String(timeout)], rankEnv(r, 2, port)));
  const results = ranks.map(finish);
  await waitFor(() => hasCheckpoint(dir), 120_000, "the first checkpoint");
  const stoppedAt = Date.now();
  Deno.kill(ranks[1].pid, "SIGSTOP");
  const survivor = await results[0];
  const seconds = (Date.now() - stoppedAt) / 1000;
  Deno.kill(ranks[1].pid, "SIGKILL");
  await results[1];
  assertEquals(survivor.code, 4, survivor.out);
  // The timeout, plus the 3 s in which the survivor waits for other ranks to report, plus slack for a loaded machine.
  assert(seconds >= timeout - 1 && seconds < timeout + 15, `rank 0 failed after ${seconds} s (timeout ${timeout} s)`);
  assert(/Timed out/i.test(survivor.out) && /lost rank 1\b/.test(survivor.out), survivor.out);
  Deno.removeSync(dir, { recursive: true });
});

glooTest(
  "dist: the launcher restarts both ranks after kill -9 and ends bitwise equal to an uninterrupted run",
  async () => {
    const reference = await twoRankRun();
    const dir = Deno.makeTempDirSync({ prefix: "dc_dist_launch_" });
    const launcher = spawn([
      "run",
      "--allow-all",
      "--unstable-ffi",
      main,
      "launch",
      "--nproc-per-node",
      "2",
      "--master-port",
      String(freePort()),
      "--max-restarts",
      "1",
      "--",
      ...TRAIN,
      ...PER_RANK_BATCH,
      "--output-dir",
      dir,
    ]);
    // The launcher names each rank's pid on stderr; kill rank 1 once the first checkpoint exists.
    let log = "";
    const reading = (async () => {
      for await (const chunk of launcher.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
    })();
    const stdout = new Response(launcher.stdout).text();
    await waitFor(() => hasCheckpoint(dir) && /rank 1 started \(pid \d+\)/.test(log), 120_000, "a checkpoint");
    const pid = Number(/rank 1 started \(pid (\d+)\)/.exec(log)![1]);
    Deno.kill(pid, "SIGKILL");
    const status = await launcher.status;
    await reading;
    const out = (await stdout) + log;
    assertEquals(status.code, 0, out);
    assert(/rank 1 failed \(signal SIGKILL\); restarting/.test(out), out);
    assert(/\[rank 0\] resume: .*checkpoint-0+(\d+)\.safetensors at step \1\b/.test(out), out);
    assert(/\[rank 0\] done: /.test(out), out);
    assertBitwiseEqual(checkpointPath(dir, STEPS), checkpointPath(reference, STEPS), "restarted vs uninterrupted");
    Deno.removeSync(dir, { recursive: true });
  },
);

glooTest("dist: two nodes (two launchers, --nnodes 2, one rank each) train like two local ranks", async () => {
  const reference = await twoRankRun();
  const dir = Deno.makeTempDirSync({ prefix: "dc_dist_nodes_" });
  const port = String(freePort());
  const node = (rank: number) =>
    spawn([
      "run",
      "--allow-all",
      "--unstable-ffi",
      main,
      "launch",
      "--nproc-per-node",
      "1",
      "--nnodes",
      "2",
      "--node-rank",
      String(rank),
      "--master-addr",
      "127.0.0.1",
      "--master-port",
      port,
      "--",
      ...TRAIN,
      ...PER_RANK_BATCH,
      "--output-dir",
      dir,
    ]);
  const results = await Promise.all([finish(node(0)), finish(node(1))]);
  results.forEach((r, n) => assertEquals(r.code, 0, `node ${n}: ${r.out}`));
  assert(/\[rank 1\] /.test(results[1].out) || results[1].out.includes("rank 1 started"), results[1].out);
  assertBitwiseEqual(checkpointPath(dir, STEPS), checkpointPath(reference, STEPS), "two nodes vs two local ranks");
  Deno.removeSync(dir, { recursive: true });
});

glooTest("dist: ranks started with different options stop at once, naming the option", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_dist_cfg_" });
  const port = freePort();
  const base = [...TRAIN, ...PER_RANK_BATCH, "--output-dir", dir];
  const started = Date.now();
  const results = await Promise.all([
    finish(trainProcess([...base, "--lr", "0.001"], rankEnv(0, 2, port))),
    finish(trainProcess([...base, "--lr", "0.002"], rankEnv(1, 2, port))),
  ]);
  for (const [rank, r] of results.entries()) {
    assertEquals(r.code, 4, `rank ${rank}: ${r.out}`);
    assert(/--lr is 0\.001 on rank 0 but 0\.002 on rank 1/.test(r.out), `rank ${rank}: ${r.out}`);
  }
  assert(Date.now() - started < 60_000, "reported promptly");
  Deno.removeSync(dir, { recursive: true });
});

Deno.test({
  name: "dist: cleanup of the shared 2-rank run",
  fn: () => {
    if (twoRankDir !== null) Deno.removeSync(twoRankDir, { recursive: true });
    twoRankDir = null;
  },
});
