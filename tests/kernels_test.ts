// kernels_test.ts: the CUDA kernels' arithmetic, checked without a GPU, and bench/device.sh's no-GPU behaviour.
// - kernels/token_select_impl.h (the code the token-selection kernel runs) is compiled for the CPU into a small test
//   binary (tests/kernels/token_select_test.cpp, g++ with __host__ __device__ defined empty) and compared bit for bit
//   with native/src/prune.cpp's reference (dc_select_tokens on CPU scores) on random sizes, cell sizes and ratios,
//   heavy ties, and NaNs, in float32 and float64.
// - dc_cls_attention_accumulate_ on the CPU (the composition the kernel replaces) against softmax(q k^T) row 0 formed
//   here from libtorch ops.
// - On a machine with CUDA (bench/device.sh on a lent GPU) the same cases also run through the kernels themselves,
//   which must equal the CPU reference exactly (token selection) or within float tolerance (CLS attention).
// - `bash bench/device.sh` without a GPU prints one line and exits 2.
import { keepCellsForRatio, selectTokens } from "../src/models/token_selection.ts";
import { cudaIsAvailable, F, kernelsCompiled, liveTensors, Tensor, tidy } from "../src/torch/mod.ts";
import { assert, assertClose, assertEquals, commandMissing, missingTool, rng } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname;
const cuda = cudaIsAvailable();
const compiler = Deno.env.get("CXX") ?? "g++";
const noCompiler = missingTool(`${compiler} (to build tests/kernels/token_select_test.cpp)`, commandMissing(compiler));
// bench/device.sh's no-GPU line is only what a machine without a GPU sees.
const gpuHere = cuda &&
  new Deno.Command("bash", { args: ["-c", "command -v nvidia-smi"], stdout: "null" }).outputSync().success;

interface Case {
  batch: number;
  gridH: number;
  gridW: number;
  cell: number;
  ratio: number;
  dtype: "float32" | "float64";
  scores: Float64Array; // float32-exact values when dtype is float32
}

/** Random cases: every shape family the kernel's thread mapping treats differently, plus ties and NaNs. */
function randomCases(count: number, seed: number): Case[] {
  const random = rng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
  const cases: Case[] = [];
  for (let i = 0; i < count; i++) {
    const official = i % 5 === 0; // the ViT-B/16 grid: 14x14 patches in 2x2 cells
    const cell = official ? 2 : [1, 2, 2, 2, 3, 4][int(0, 5)];
    const gridH = official ? 14 : cell * int(1, 9);
    const gridW = official ? 14 : cell * int(1, 9);
    const batch = int(1, 6);
    const ratio = [0, 1, 0.5, random()][int(0, 3)];
    const dtype = i % 3 === 0 ? "float64" : "float32";
    const values = new Float64Array(batch * gridH * gridW);
    const style = i % 4; // 0 continuous, 1 few distinct values (ties everywhere), 2 all equal, 3 with NaNs
    for (let j = 0; j < values.length; j++) {
      let v = style === 1 ? int(0, 3) / 8 : style === 2 ? 0.25 : random() / 196;
      if (style === 3 && random() < 0.1) v = Number.NaN;
      values[j] = dtype === "float32" ? Math.fround(v) : v;
    }
    cases.push({ batch, gridH, gridW, cell, ratio, dtype, scores: values });
  }
  return cases;
}

/** Compiles tests/kernels/token_select_test.cpp once per run (a few seconds). */
async function buildImplBinary(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "dc_kernels_test_" });
  const out = `${dir}/token_select_test`;
  const result = await new Deno.Command(compiler, {
    args: [
      "-std=c++17",
      "-O2",
      "-Wall",
      "-Wextra",
      "-Werror",
      "-x",
      "c++",
      "-DDC_HD=",
      "-o",
      out,
      `${root}tests/kernels/token_select_test.cpp`,
    ],
    stderr: "piped",
  }).output();
  if (!result.success) throw new Error(`${compiler} failed:\n${new TextDecoder().decode(result.stderr)}`);
  return out;
}

interface Outputs {
  mask: number[];
  idsKeep: number[];
  idsRestore: number[];
}

/** Runs every case through the impl binary in one process (the protocol is in token_select_test.cpp). */
async function runImpl(binary: string, cases: Case[]): Promise<Outputs[]> {
  const chunks: Uint8Array[] = [];
  for (const c of cases) {
    const cells = (c.gridH / c.cell) * (c.gridW / c.cell);
    const header = new BigInt64Array(
      [c.batch, c.gridH, c.gridW, c.cell, keepCellsForRatio(cells, c.ratio), c.dtype === "float32" ? 0 : 1].map(BigInt),
    );
    chunks.push(new Uint8Array(header.buffer), new Uint8Array(c.scores.slice().buffer));
  }
  const child = new Deno.Command(binary, { stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  // Read while writing: the binary answers case by case, and a full stdout pipe would otherwise block both sides.
  const output = child.output();
  const writer = child.stdin.getWriter();
  for (const chunk of chunks) await writer.write(chunk);
  await writer.close();
  const { success, stdout, stderr } = await output;
  assert(success, `token_select_test failed: ${new TextDecoder().decode(stderr)}`);
  const words = new BigInt64Array(stdout.buffer, stdout.byteOffset, stdout.byteLength / 8);
  let at = 0;
  const take = (n: number): number[] => Array.from(words.subarray(at, at += n), Number);
  return cases.map((c) => {
    const n = c.gridH * c.gridW;
    const kept = keepCellsForRatio((c.gridH / c.cell) * (c.gridW / c.cell), c.ratio) * c.cell * c.cell;
    return { mask: take(c.batch * n), idsKeep: take(c.batch * kept), idsRestore: take(c.batch * n) };
  });
}

/** prune.cpp's reference (or, with device "cuda", whatever dc_select_tokens dispatches to there). */
function reference(c: Case, device: "cpu" | "cuda"): Outputs {
  return tidy(() => {
    const data = c.dtype === "float32" ? Float32Array.from(c.scores) : c.scores;
    const scores = Tensor.fromArray(data, [c.batch, c.gridH * c.gridW], { dtype: c.dtype, device });
    const out = selectTokens(scores, { gridH: c.gridH, gridW: c.gridW, cell: c.cell, ratio: c.ratio });
    return {
      mask: out.mask.to({ dtype: "int64", device: "cpu" }).toArray(),
      idsKeep: out.idsKeep.to("cpu").toArray(),
      idsRestore: out.idsRestore.to("cpu").toArray(),
    };
  });
}

function describe(c: Case): string {
  return `B=${c.batch} grid ${c.gridH}x${c.gridW} cell ${c.cell} ratio ${c.ratio} ${c.dtype}`;
}

Deno.test({
  name: "token_select_impl.h on the CPU equals prune.cpp's reference bit for bit (400 random cases)",
  ignore: noCompiler,
}, async () => {
  const binary = await buildImplBinary();
  try {
    const cases = randomCases(400, 8);
    const before = liveTensors();
    const impl = await runImpl(binary, cases);
    cases.forEach((c, i) => assertEquals(impl[i], reference(c, "cpu"), describe(c)));
    assertEquals(liveTensors(), before, "live handles");
  } finally {
    await Deno.remove(binary.replace(/\/[^/]+$/, ""), { recursive: true });
  }
});

Deno.test({
  name: "CUDA: the token-selection kernel equals the CPU reference bit for bit (400 random cases, B up to 512)",
  ignore: !cuda,
  fn() {
    assert(kernelsCompiled(), "this CUDA build has no kernels (nvcc missing at configure time?)");
    const cases = randomCases(400, 9);
    const random = rng(10);
    for (const batch of [128, 512]) { // the training sizes, official grid
      const scores = new Float64Array(batch * 196).map(() => Math.fround(random() / 196));
      cases.push({ batch, gridH: 14, gridW: 14, cell: 2, ratio: 0.5, dtype: "float32", scores });
    }
    for (const c of cases) assertEquals(reference(c, "cuda"), reference(c, "cpu"), describe(c));
  },
});

/** The CLS row of softmax(q k^T * scale), head-summed over the patch keys, from plain libtorch ops. */
function clsAttentionByHand(qkv: Tensor, heads: number, scale: number): Tensor {
  return tidy(() => {
    const [b, n, threeD] = qkv.shape;
    const hd = threeD / 3 / heads;
    const split = qkv.reshape([b, n, 3, heads, hd]).permute([2, 0, 3, 1, 4]); // (3, B, H, N, hd)
    const q = split.select(0, 0).narrow(2, 0, 1);
    const k = split.select(0, 1);
    const probs = F.softmax(q.matmul(k.transpose(-2, -1)).mul(scale), -1).squeeze(2); // (B, H, N)
    return probs.slice(2, 1).sum(1);
  });
}

Deno.test("dc_cls_attention_accumulate_ adds the head-summed CLS attention (CPU, and CUDA kernel when present)", () => {
  const before = liveTensors();
  tidy(() => {
    const random = rng(11);
    for (const [b, n, heads, hd] of [[2, 5, 1, 4], [3, 17, 4, 8], [2, 197, 12, 64], [1, 300, 3, 16]]) {
      const data = Float32Array.from({ length: b * n * 3 * heads * hd }, () => random() * 4 - 2);
      const qkv = Tensor.fromArray(data, [b, n, 3 * heads * hd]);
      const scale = hd ** -0.5;
      const expected = clsAttentionByHand(qkv, heads, scale).mul(2).toArray(); // accumulated twice below
      const devices: ("cpu" | "cuda")[] = cuda ? ["cpu", "cuda"] : ["cpu"];
      for (const device of devices) {
        for (const dtype of device === "cuda" ? ["float32", "bfloat16"] as const : ["float32"] as const) {
          const input = qkv.to({ device, dtype });
          const acc = Tensor.zeros([b, n - 1], { dtype: "float32", device });
          F.clsAttentionAccumulate_(acc, input, heads, scale);
          F.clsAttentionAccumulate_(acc, input, heads, scale);
          const tolerance = dtype === "bfloat16" ? 2e-2 : 1e-5;
          assertClose(acc.to("cpu").toArray(), expected, {
            atol: tolerance,
            rtol: tolerance,
            message: `${device} ${dtype} B=${b} N=${n} H=${heads} hd=${hd}`,
          });
        }
      }
    }
  });
  assertEquals(liveTensors(), before, "live handles");
});

Deno.test({ name: "bench/device.sh without a GPU prints one line and exits 2", ignore: gpuHere }, async () => {
  const { code, stdout, stderr } = await new Deno.Command("bash", {
    args: [`${root}bench/device.sh`],
    env: { OUT: await Deno.makeTempDir({ prefix: "dc_device_out_" }) },
  }).output();
  const text = (new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr)).trim();
  assertEquals(code, 2, `exit status (output: ${text})`);
  assertEquals(text.split("\n").length, 1, `one line, got: ${text}`);
  assert(/^bench\/device\.sh: no CUDA device \(.+\); nothing to run$/.test(text), `message: ${text}`);
});
