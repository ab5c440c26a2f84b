// checkpoint_test.ts: training checkpoints (src/checkpoint/checkpoint.ts) against round trips, pruning, the best copy,
// corruption (a flipped byte in the data or in the header, truncation, a foreign file), leftover temp files, and a
// real SIGKILL of a process in the middle of writing a 200 MB checkpoint. Every test also checks that the native
// live-handle count returns to where it started.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { StateDictError } from "../src/nn/module.ts";
import {
  liveTensors,
  manualSeed,
  rngState,
  SafeTensorsFile,
  setRngState,
  Tensor,
  writeSafeTensors,
} from "../src/torch/mod.ts";
import {
  BEST_CHECKPOINT,
  CheckpointError,
  checkpointPath,
  type CheckpointProblem,
  type CheckpointState,
  findResumeCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  verifyCheckpoint,
} from "../src/checkpoint/checkpoint.ts";
import { AdamW } from "../src/train/optimizer.ts";

/** Registers a test that fails if it leaves native tensor handles alive; `fn` gets a fresh directory. */
function leakFreeTest(name: string, fn: (dir: string) => void | Promise<void>): void {
  Deno.test(name, async () => {
    const baseline = liveTensors();
    const dir = Deno.makeTempDirSync({ prefix: "checkpoint_test_" });
    try {
      await fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    strictEqual(liveTensors(), baseline, "live native tensor handles did not return to the baseline");
  });
}

/** A small state whose tensor values depend on `step`, so files of different steps differ. */
function smallState(step: number): CheckpointState {
  const tensors = new Map<string, Tensor>([
    ["model.weight", Tensor.fromArray([step, 1.5, -2.25, 3e-8, 0.1, 7], [2, 3])],
    ["optimizer.weight.exp_avg", Tensor.fromArray(new BigInt64Array([BigInt(step), 2n ** 40n + 1n]))],
  ]);
  return { tensors, meta: { step, epoch: Math.floor(step / 10), note: 'unicode ✓ "quoted"' } };
}

function save(
  dir: string,
  step: number,
  options: { keepLast?: number; best?: boolean; log?: (m: string) => void } = {},
) {
  const state = smallState(step);
  try {
    return saveCheckpoint(dir, state, options);
  } finally {
    for (const t of state.tensors.values()) t.dispose();
  }
}

function loadedStep(path: string): number {
  const loaded = loadCheckpoint(path);
  try {
    strictEqual(loaded.tensors.get("model.weight")!.toArray()[0], loaded.step, `${path}: tensor data of another step`);
    return loaded.step;
  } finally {
    for (const t of loaded.tensors.values()) t.dispose();
  }
}

function checkpointNames(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

function problemOf(fn: () => unknown): CheckpointProblem {
  try {
    fn();
  } catch (error) {
    ok(error instanceof CheckpointError, `expected a CheckpointError, got ${error}`);
    return error.problem;
  }
  throw new Error("expected a CheckpointError, nothing was thrown");
}

/** XORs one byte of a file at `offset`. */
function flipByte(path: string, offset: number): void {
  const bytes = Deno.readFileSync(path);
  bytes[offset] ^= 0x01;
  Deno.writeFileSync(path, bytes);
}

function dataOffset(path: string): number {
  using file = SafeTensorsFile.open(path);
  return file.dataOffset;
}

leakFreeTest(
  "round trip: float32, int64, bfloat16, bool, scalar, empty and RNG-state tensors with nested meta",
  (dir) => {
    manualSeed(1234);
    const rng = rngState("cpu");
    const expectedDraw = Tensor.rand([5]);
    const tensors = new Map<string, Tensor>([
      ["model.visual.weight", Tensor.randn([4, 3])],
      ["model.bf16", Tensor.fromArray([1.5, -2, 0.125], [3], { dtype: "bfloat16" })],
      ["optimizer.count", Tensor.fromArray(new BigInt64Array([-3n, 2n ** 53n + 7n]))],
      ["loss.mask", Tensor.fromArray([true, false, true])],
      ["loss.scalar", Tensor.fromArray([2.5], [])],
      ["loss.empty", Tensor.zeros([0, 4])],
      ["rng.cpu", rng],
    ]);
    const meta = {
      step: 120,
      epoch: 3,
      data: { epoch: 3, index: 17, order: [3, 1, 2] },
      scaler: null,
      metrics: { loss: 0.1 + 0.2, tiny: 5e-324 },
      optional: undefined,
      text: "a small red circle ✓",
    };
    try {
      const path = saveCheckpoint(dir, { tensors, meta });
      strictEqual(path, `${dir}/checkpoint-00000120.safetensors`);
      const loaded = loadCheckpoint(path);
      try {
        strictEqual(loaded.step, 120);
        deepStrictEqual(loaded.meta, JSON.parse(JSON.stringify(meta)));
        deepStrictEqual([...loaded.tensors.keys()], [...tensors.keys()]);
        for (const [name, original] of tensors) {
          const back = loaded.tensors.get(name)!;
          strictEqual(back.dtype, original.dtype, `${name} dtype`);
          deepStrictEqual(back.shape, original.shape, `${name} shape`);
          deepStrictEqual(back.toBytes(), original.toBytes(), `${name} bytes`);
        }
        // The saved generator state reproduces the draw that followed it.
        setRngState(loaded.tensors.get("rng.cpu")!, "cpu");
        const draw = Tensor.rand([5]);
        deepStrictEqual(draw.toArray(), expectedDraw.toArray(), "RNG state restored from the checkpoint");
        draw.dispose();
      } finally {
        for (const t of loaded.tensors.values()) t.dispose();
      }
      deepStrictEqual(verifyCheckpoint(path).meta, JSON.parse(JSON.stringify(meta)));
      const found = findResumeCheckpoint(dir)!;
      strictEqual(found.path, path);
      deepStrictEqual(found.skipped, []);
    } finally {
      for (const t of tensors.values()) t.dispose();
      expectedDraw.dispose();
    }
  },
);

leakFreeTest("keepLast keeps the newest N; a save at an older step removes the abandoned newer ones", (dir) => {
  for (const step of [1, 2, 3, 4, 5]) save(dir, step, { keepLast: 2 });
  deepStrictEqual(checkpointNames(dir), ["checkpoint-00000004.safetensors", "checkpoint-00000005.safetensors"]);
  for (const step of [10, 20, 30]) save(dir, step, { keepLast: 10 });
  const removed: string[] = [];
  save(dir, 15, { keepLast: 3, log: (m) => removed.push(m) });
  deepStrictEqual(checkpointNames(dir), [
    "checkpoint-00000005.safetensors",
    "checkpoint-00000010.safetensors",
    "checkpoint-00000015.safetensors",
  ]);
  strictEqual(removed.length, 3, removed.join("\n"));
  ok(removed.some((m) => m.includes("checkpoint-00000030") && m.includes("abandoned")), removed.join("\n"));
  strictEqual(findResumeCheckpoint(dir)!.step, 15);
  // A step past 8 digits still sorts by number, not by name.
  save(dir, 123_456_789, { keepLast: 2 });
  strictEqual(findResumeCheckpoint(dir)!.step, 123_456_789);
  deepStrictEqual(checkpointNames(dir), ["checkpoint-00000015.safetensors", "checkpoint-123456789.safetensors"]);
});

leakFreeTest("best: a link or copy that outlives pruning and moves with the next best", (dir) => {
  save(dir, 10, { keepLast: 1, best: true });
  save(dir, 20, { keepLast: 1 });
  save(dir, 30, { keepLast: 1 });
  deepStrictEqual(checkpointNames(dir), ["checkpoint-00000030.safetensors", BEST_CHECKPOINT]);
  strictEqual(loadedStep(`${dir}/${BEST_CHECKPOINT}`), 10);
  save(dir, 40, { keepLast: 1, best: true });
  strictEqual(loadedStep(`${dir}/${BEST_CHECKPOINT}`), 40);
  // Saving the same step as best twice (rename between two links of one file) leaves no temp file behind.
  save(dir, 40, { keepLast: 1, best: true });
  deepStrictEqual(checkpointNames(dir), ["checkpoint-00000040.safetensors", BEST_CHECKPOINT]);
  // The best file is not a resume candidate; the regular one is.
  strictEqual(findResumeCheckpoint(dir)!.path, checkpointPath(dir, 40));
});

leakFreeTest("a flipped byte in the data section: digest mismatch on load; --resume auto falls back", (dir) => {
  save(dir, 10);
  const bad = save(dir, 20);
  flipByte(bad, dataOffset(bad) + 5);
  strictEqual(problemOf(() => loadCheckpoint(bad)), "digest-mismatch");
  strictEqual(problemOf(() => verifyCheckpoint(bad)), "digest-mismatch");
  const found = findResumeCheckpoint(dir)!;
  strictEqual(found.step, 10);
  strictEqual(found.skipped.length, 1);
  strictEqual(found.skipped[0].path, bad);
  ok(found.skipped[0].reason.startsWith("digest-mismatch"), found.skipped[0].reason);
  strictEqual(loadedStep(found.path), 10);
});

leakFreeTest("a flipped byte in the meta (header) is caught by the index digest", (dir) => {
  save(dir, 10);
  const bad = save(dir, 25);
  // meta is a JSON string inside the header, so its quotes are escaped: find `epoch\":2` and change the digit.
  const bytes = Deno.readFileSync(bad);
  const text = new TextDecoder().decode(bytes.subarray(0, dataOffset(bad)));
  const at = text.indexOf('epoch\\":2');
  ok(at > 0, "meta text not found in the header");
  flipByte(bad, at + 'epoch\\":'.length); // '2' -> '3'
  strictEqual(problemOf(() => loadCheckpoint(bad)), "digest-mismatch");
  const found = findResumeCheckpoint(dir)!;
  strictEqual(found.step, 10);
  ok(found.skipped[0].reason.includes("meta and tensor index"), found.skipped[0].reason);
});

leakFreeTest("truncated files (in the data, in the header, empty) are reported as truncated and skipped", (dir) => {
  save(dir, 10);
  for (const [step, keep] of [[20, -3], [30, 12], [40, 0]] as const) {
    const path = save(dir, step, { keepLast: 10 });
    const size = Deno.statSync(path).size;
    Deno.truncateSync(path, keep < 0 ? size + keep : keep);
    strictEqual(problemOf(() => loadCheckpoint(path)), "truncated", `${path} cut to ${keep}`);
  }
  const found = findResumeCheckpoint(dir)!;
  strictEqual(found.step, 10);
  deepStrictEqual(found.skipped.map((s) => s.reason.split(":")[0]), ["truncated", "truncated", "truncated"]);
});

leakFreeTest("foreign files: a plain safetensors file, a renamed checkpoint, a missing path", (dir) => {
  save(dir, 10);
  const weights = Tensor.zeros([2]);
  writeSafeTensors(checkpointPath(dir, 50), { w: weights });
  weights.dispose();
  strictEqual(problemOf(() => loadCheckpoint(checkpointPath(dir, 50))), "wrong-format");
  Deno.copyFileSync(checkpointPath(dir, 10), checkpointPath(dir, 40));
  strictEqual(problemOf(() => loadCheckpoint(checkpointPath(dir, 40))), "wrong-format");
  strictEqual(problemOf(() => loadCheckpoint(`${dir}/nope.safetensors`)), "unreadable");
  const found = findResumeCheckpoint(dir)!;
  strictEqual(found.step, 10);
  deepStrictEqual(found.skipped.map((s) => s.path), [checkpointPath(dir, 50), checkpointPath(dir, 40)]);
  ok(found.skipped[1].reason.includes("file name says step 40, meta says 10"), found.skipped[1].reason);
});

leakFreeTest("leftover temp files: ignored; a dead writer's removed, a live process's kept", (dir) => {
  save(dir, 10);
  const dead = deadPid();
  const stale = `${checkpointPath(dir, 20)}.tmp-${dead}`;
  const full = Deno.readFileSync(checkpointPath(dir, 10));
  Deno.writeFileSync(stale, full.subarray(0, full.byteLength >> 1)); // a writer killed half-way
  const live = `${checkpointPath(dir, 30)}.tmp-1`; // pid 1 is always alive
  Deno.writeFileSync(live, full.subarray(0, 10));
  const found = findResumeCheckpoint(dir)!;
  strictEqual(found.step, 10);
  deepStrictEqual(found.skipped, []);
  deepStrictEqual(checkpointNames(dir), [
    "checkpoint-00000010.safetensors",
    "checkpoint-00000030.safetensors.tmp-1",
  ]);
  strictEqual(loadedStep(found.path), 10);
});

leakFreeTest("no checkpoints: null; only bad ones: a no-good-checkpoint error that lists them", (dir) => {
  strictEqual(findResumeCheckpoint(`${dir}/missing`), null);
  strictEqual(findResumeCheckpoint(dir), null);
  const path = save(dir, 10);
  Deno.truncateSync(path, 100);
  throws(() => findResumeCheckpoint(dir), (e: unknown) => {
    ok(e instanceof CheckpointError);
    strictEqual(e.problem, "no-good-checkpoint");
    strictEqual(e.skipped.length, 1);
    ok(e.message.includes(path) && e.message.includes("truncated"), e.message);
    return true;
  });
});

leakFreeTest("invalid state is refused before anything is written", (dir) => {
  const t = Tensor.zeros([1]);
  try {
    const attempt = (meta: Record<string, unknown>, keepLast?: number): CheckpointProblem =>
      problemOf(() => saveCheckpoint(dir, { tensors: new Map([["t", t]]), meta }, { keepLast }));
    strictEqual(attempt({ epoch: 1 }), "invalid-state"); // no step
    strictEqual(attempt({ step: -1 }), "invalid-state");
    strictEqual(attempt({ step: 1.5 }), "invalid-state");
    strictEqual(attempt({ step: 1, metrics: { loss: Number.NaN } }), "invalid-state");
    strictEqual(attempt({ step: 1, order: new Map() }), "invalid-state");
    strictEqual(attempt({ step: 1, list: [1, undefined] }), "invalid-state");
    strictEqual(attempt({ step: 1 }, 0), "invalid-state");
    throws(
      () => saveCheckpoint(dir, { tensors: new Map([["t", t]]), meta: { step: 1, metrics: { loss: Number.NaN } } }),
      /meta\.metrics\.loss is NaN/,
    );
    deepStrictEqual(checkpointNames(dir), []);
  } finally {
    t.dispose();
  }
});

leakFreeTest("AdamW.loadStateTensors restores moments and step count, all or nothing", () => {
  const params: [string, Tensor][] = [
    ["w", Tensor.randn([3, 2]).requiresGrad_(true).keep()],
    ["b", Tensor.zeros([2]).requiresGrad_(true).keep()],
  ];
  const optimizer = new AdamW([{ name: "all", params, weightDecay: 0.1 }], { betas: [0.9, 0.98], eps: 1e-8 });
  const saved = new Map<string, Tensor>();
  try {
    for (const [key, t] of optimizer.stateTensors()) saved.set(key, Tensor.randn(t.shape));
    optimizer.loadStateTensors(saved, 7);
    strictEqual(optimizer.stepCount, 7);
    for (const [key, t] of optimizer.stateTensors()) deepStrictEqual(t.toArray(), saved.get(key)!.toArray(), key);
    const partial = new Map(saved);
    partial.delete("b.exp_avg_sq");
    const before = optimizer.stateTensors().get("w.exp_avg")!.toArray();
    throws(() => optimizer.loadStateTensors(partial, 8), StateDictError);
    deepStrictEqual(optimizer.stateTensors().get("w.exp_avg")!.toArray(), before, "nothing copied on failure");
    strictEqual(optimizer.stepCount, 7);
  } finally {
    optimizer.dispose();
    for (const t of saved.values()) t.dispose();
    for (const [, p] of params) p.dispose();
  }
});

leakFreeTest("SIGKILL during a 200 MB checkpoint write leaves the previous one loadable", async (dir) => {
  const checkpointModule = new URL("../src/checkpoint/checkpoint.ts", import.meta.url).href;
  const torchModule = new URL("../src/torch/mod.ts", import.meta.url).href;
  // Saves forever, each step's file ~200 MB; prints after each complete save.
  const script = `
    import { saveCheckpoint } from "${checkpointModule}";
    import { Tensor } from "${torchModule}";
    const big = Tensor.randn([50_000_000]).keep();
    for (let step = 1; ; step++) {
      const marker = Tensor.fromArray([step]);
      saveCheckpoint(${JSON.stringify(dir)}, { tensors: new Map([["big", big], ["marker", marker]]), meta: { step } },
        { keepLast: 2 });
      marker.dispose();
      console.log("saved " + step);
    }`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--unstable-ffi", script],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let output = "";
  const stderrText = new Response(child.stderr).text();
  let killedMidWrite = false;
  try {
    const deadline = Date.now() + 120_000;
    while (!output.includes("saved 1\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`writer exited before its first save: ${await stderrText}`);
      output += value;
      if (Date.now() > deadline) throw new Error("writer took over 2 minutes for its first save");
    }
    // Wait until the next write is under way (its temp file has some data), then kill it. A writer that never uses
    // a temp file is killed after 15 s anyway, most likely mid-write, and fails the checks below.
    const writeDeadline = Date.now() + 15_000;
    while (Date.now() < writeDeadline) {
      const temp = [...Deno.readDirSync(dir)].find((e) => e.name.includes(".tmp-"));
      if (temp !== undefined && Deno.statSync(`${dir}/${temp.name}`).size > 0) {
        child.kill("SIGKILL");
        killedMidWrite = true;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  } finally {
    if (!killedMidWrite) child.kill("SIGKILL");
    await reader.cancel();
    const status = await child.status;
    await stderrText;
    strictEqual(status.signal, "SIGKILL", "the writer should have died by SIGKILL");
  }
  const temps = checkpointNames(dir).filter((n) => n.includes(".tmp-"));
  const found = findResumeCheckpoint(dir);
  ok(found !== null, "no checkpoint found after the kill");
  deepStrictEqual(found.skipped, [], "no final-name file may be partial");
  ok(killedMidWrite, "never saw a write in progress through a temp file");
  strictEqual(temps.length, 1, `a partial temp file should remain after the kill: ${temps}`);
  deepStrictEqual(checkpointNames(dir).filter((n) => n.includes(".tmp-")), [], "the dead writer's temp is cleaned");
  const loaded = loadCheckpoint(found.path);
  try {
    strictEqual(loaded.tensors.get("marker")!.toArray()[0], loaded.step);
    deepStrictEqual(loaded.tensors.get("big")!.shape, [50_000_000]);
  } finally {
    for (const t of loaded.tensors.values()) t.dispose();
  }
});

/** A pid with no process behind it (a stale temp file's writer). */
function deadPid(): number {
  for (let pid = 4_000_000; pid > 3_000_000; pid -= 7919) {
    try {
      Deno.statSync(`/proc/${pid}`);
    } catch {
      return pid;
    }
  }
  throw new Error("no free pid found");
}
