// rng_state_test.ts: the generator states in training checkpoints (src/train/rng_state.ts), on the CPU. A checkpoint
// written by a CPU run holds only rng.cpu and resumes; a CUDA run's rng.cuda entry (here a stand-in state of the size
// libtorch's CUDA generator has, 16 bytes: seed and Philox offset) round-trips through the checkpoint file byte for
// byte and is handed to the training device's generator, whichever GPU that is; a malformed entry is refused.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { cudaIsAvailable, type Device, liveTensors, manualSeed, Tensor } from "../src/torch/mod.ts";
import { loadCheckpoint, saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import {
  captureRngStates,
  restoreRngStates,
  RNG_CPU_KEY,
  RNG_CUDA_KEY,
  RngStateError,
} from "../src/train/rng_state.ts";

function leakFreeTest(name: string, fn: (dir: string) => void): void {
  Deno.test(name, () => {
    const baseline = liveTensors();
    const dir = Deno.makeTempDirSync({ prefix: "rng_state_test_" });
    try {
      fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    strictEqual(liveTensors(), baseline, "live native tensor handles did not return to the baseline");
  });
}

/** A CUDA generator state as libtorch 2.x lays it out (uint64 seed, int64 offset), for a machine without a GPU. */
function standInCudaState(seed: bigint, offset: bigint): Tensor {
  const words = new BigUint64Array([seed, offset]);
  return Tensor.fromArray(new Uint8Array(words.buffer), [16]);
}

function disposeAll(tensors: Map<string, Tensor>): void {
  for (const t of tensors.values()) t.dispose();
}

leakFreeTest("a CPU run's checkpoint holds rng.cpu only, loads, and its state reproduces the next draw", (dir) => {
  manualSeed(7);
  const states = captureRngStates("cpu");
  deepStrictEqual([...states.keys()], [RNG_CPU_KEY]);
  const expected = Tensor.rand([6]);
  const weight = Tensor.fromArray([1, 2, 3]);
  try {
    const path = saveCheckpoint(dir, { tensors: new Map([["model.w", weight], ...states]), meta: { step: 3 } });
    Tensor.rand([100]).dispose(); // move the generator on
    const loaded = loadCheckpoint(path);
    try {
      ok(!loaded.tensors.has(RNG_CUDA_KEY), "a CPU run wrote a CUDA generator state");
      // Resumed on the CPU, and resumed on a GPU: the CUDA generator is left alone (nothing to restore it from).
      const writes: [string, Device][] = [];
      deepStrictEqual(restoreRngStates(loaded.tensors, "cuda:0", (s, d) => writes.push([s.dtype, d])), [RNG_CPU_KEY]);
      deepStrictEqual(writes, [["uint8", "cpu"]]);
      deepStrictEqual(restoreRngStates(loaded.tensors, "cpu"), [RNG_CPU_KEY]);
      const draw = Tensor.rand([6]);
      deepStrictEqual(draw.toArray(), expected.toArray(), "the restored CPU generator drew something else");
      draw.dispose();
    } finally {
      disposeAll(loaded.tensors);
    }
  } finally {
    expected.dispose();
    weight.dispose();
    disposeAll(states);
  }
});

leakFreeTest("a CUDA run's rng.cuda round-trips through the checkpoint and goes to the training GPU", (dir) => {
  const reads: Device[] = [];
  const states = captureRngStates("cuda:1", (device) => {
    reads.push(device);
    return device === "cpu" ? Tensor.fromArray(new Uint8Array([1, 2, 3])) : standInCudaState(42n, 2n ** 40n + 8n);
  });
  deepStrictEqual(reads, ["cpu", "cuda:1"]);
  deepStrictEqual([...states.keys()], [RNG_CPU_KEY, RNG_CUDA_KEY]);
  try {
    const path = saveCheckpoint(dir, { tensors: states, meta: { step: 5 } });
    const loaded = loadCheckpoint(path);
    try {
      const back = loaded.tensors.get(RNG_CUDA_KEY)!;
      strictEqual(back.dtype, "uint8");
      deepStrictEqual(back.shape, [16]);
      deepStrictEqual(back.toBytes(), states.get(RNG_CUDA_KEY)!.toBytes(), "rng.cuda bytes changed on the way");
      // Resumed as another local rank (cuda:0): the CUDA state goes to that rank's device, the CPU one to the CPU.
      const writes: [string, Device, number[]][] = [];
      const restored = restoreRngStates(loaded.tensors, "cuda:0", (s, d) => writes.push([s.dtype, d, s.shape]));
      deepStrictEqual(restored, [RNG_CPU_KEY, RNG_CUDA_KEY]);
      deepStrictEqual(writes, [["uint8", "cpu", [3]], ["uint8", "cuda:0", [16]]]);
      // Resumed on the CPU: the CUDA state has no generator to go to.
      const cpuWrites: Device[] = [];
      deepStrictEqual(restoreRngStates(loaded.tensors, "cpu", (_s, d) => cpuWrites.push(d)), [RNG_CPU_KEY]);
      deepStrictEqual(cpuWrites, ["cpu"]);
    } finally {
      disposeAll(loaded.tensors);
    }
  } finally {
    disposeAll(states);
  }
});

leakFreeTest("a generator state that is not a 1-D uint8 tensor is refused with the key named", () => {
  const bad = new Map([[RNG_CUDA_KEY, Tensor.fromArray([1.5, 2.5])]]);
  try {
    throws(
      () => restoreRngStates(bad, "cuda", () => {}),
      (error: unknown) =>
        error instanceof RngStateError && error.message.includes("rng.cuda") && error.message.includes("float32"),
    );
  } finally {
    disposeAll(bad);
  }
});

Deno.test({
  name: "on a GPU: the CUDA generator's state from a checkpoint reproduces the CUDA draw that followed it",
  ignore: !cudaIsAvailable(), // needs a CUDA device (bench/device.sh runs this file on a lent GPU)
  fn() {
    const baseline = liveTensors();
    const dir = Deno.makeTempDirSync({ prefix: "rng_state_test_" });
    try {
      manualSeed(11);
      const states = captureRngStates("cuda");
      const expected = Tensor.rand([8], { device: "cuda" });
      try {
        const path = saveCheckpoint(dir, { tensors: states, meta: { step: 1 } });
        Tensor.rand([1000], { device: "cuda" }).dispose();
        const loaded = loadCheckpoint(path);
        try {
          deepStrictEqual(restoreRngStates(loaded.tensors, "cuda"), [RNG_CPU_KEY, RNG_CUDA_KEY]);
          const draw = Tensor.rand([8], { device: "cuda" });
          deepStrictEqual(draw.toArray(), expected.toArray(), "the restored CUDA generator drew something else");
          draw.dispose();
        } finally {
          disposeAll(loaded.tensors);
        }
      } finally {
        expected.dispose();
        disposeAll(states);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    strictEqual(liveTensors(), baseline, "live native tensor handles did not return to the baseline");
  },
});
