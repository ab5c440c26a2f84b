// bench/ffi.ts: what the TypeScript wrapper costs per op. (1) a trivial op (a + b on 1-element tensors) through
// the whole wrapper (FFI call, Tensor creation with finalizer and scope registration, dispose) against the same
// loop in C++ (dc_bench_add_loop: new handle + free); (2) a 1000-op model-like sequence, the share of its wall time
// spent outside libtorch, and the same sequence in PyTorch eager (Debian's python3-torch) beside it.
// Usage: deno task bench:ffi [--json]
import { F, native, noGrad, setNumThreads, Tensor, tidy } from "../src/torch/internal.ts";

const iterations = 200_000;
// One intra-op thread on both sides: the benchmark measures per-op overhead, not thread-pool scheduling.
setNumThreads(1);
const rounds = 5;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function wrapperLoop(a: Tensor, b: Tensor, n: number): number {
  const start = performance.now();
  for (let i = 0; i < n; i++) a.add(b).dispose();
  return (performance.now() - start) / 1000;
}

function scopedLoop(a: Tensor, b: Tensor, n: number): number {
  const start = performance.now();
  tidy(() => {
    for (let i = 0; i < n; i++) a.add(b);
  });
  return (performance.now() - start) / 1000;
}

const a = Tensor.fromArray([1]).keep();
const b = Tensor.fromArray([2]).keep();
wrapperLoop(a, b, 20_000);
native().dc_bench_add_loop(a.handle, b.handle, 20_000n);
const wrapperSeconds: number[] = [];
const scopedSeconds: number[] = [];
const nativeSeconds: number[] = [];
for (let r = 0; r < rounds; r++) {
  wrapperSeconds.push(wrapperLoop(a, b, iterations));
  scopedSeconds.push(scopedLoop(a, b, iterations));
  nativeSeconds.push(native().dc_bench_add_loop(a.handle, b.handle, BigInt(iterations)));
}
const perOpWrapper = median(wrapperSeconds) / iterations * 1e9;
const perOpScoped = median(scopedSeconds) / iterations * 1e9;
const perOpNative = median(nativeSeconds) / iterations * 1e9;

// A model-like sequence: 100 rounds of 10 ops on (8, 64) activations.
const x = Tensor.randn([8, 64]).keep();
const w = Tensor.randn([64, 64]).mul(0.1).keep();
const bias = Tensor.zeros([64]).keep();
const gamma = Tensor.ones([64]).keep();
function sequence(): void {
  noGrad(() =>
    tidy(() => {
      let h = x;
      for (let i = 0; i < 100; i++) {
        const y = F.linear(h, w, bias); // 1
        const g = y.gelu(); // 2
        const n = F.layerNorm(g, [64], gamma, bias, 1e-6); // 3
        const r = n.add(h); // 4
        const s = F.softmax(r.mul(0.5), -1); // 5, 6
        const t = s.transpose(0, 1); // 7
        const m = s.matmul(t); // 8
        const total = m.sum(); // 9
        h = r.sub(total.mul(1e-3)); // 10 (+1)
      }
    })
  );
}
const sequenceOps = 1100;
for (let i = 0; i < 5; i++) sequence();
const sequenceSeconds: number[] = [];
for (let r = 0; r < 20; r++) {
  const start = performance.now();
  sequence();
  sequenceSeconds.push((performance.now() - start) / 1000);
}
const sequenceMs = median(sequenceSeconds) * 1000;
const overheadPerOp = perOpScoped - perOpNative;
const outsideShare = (overheadPerOp * sequenceOps) / (sequenceMs * 1e6);

let pytorchMs: number | null = null;
try {
  const script = new URL("./ffi_baseline.py", import.meta.url).pathname;
  const out = new Deno.Command("/usr/bin/python3", { args: [script], stdout: "piped", stderr: "piped" }).outputSync();
  if (out.success) pytorchMs = JSON.parse(new TextDecoder().decode(out.stdout)).sequence_ms;
} catch {
  pytorchMs = null;
}

const result = {
  trivial_op_ns: { wrapper_dispose: perOpWrapper, wrapper_scoped: perOpScoped, native_loop: perOpNative },
  wrapper_overhead_ns: { dispose: perOpWrapper - perOpNative, scoped: overheadPerOp },
  sequence: {
    ops: sequenceOps,
    detailclip_ms: sequenceMs,
    pytorch_eager_ms: pytorchMs,
    outside_libtorch_share: outsideShare,
  },
};
if (Deno.args.includes("--json")) {
  console.log(JSON.stringify(result));
} else {
  const f = (v: number): string => v.toFixed(0);
  console.log(`trivial op (a + b, 1 element), ${iterations} iterations, median of ${rounds}:`);
  console.log(`  native loop (C++ new handle + free):   ${f(perOpNative)} ns/op`);
  console.log(
    `  TS wrapper, explicit dispose:           ${f(perOpWrapper)} ns/op  (+${f(perOpWrapper - perOpNative)} ns)`,
  );
  console.log(`  TS wrapper, freed by tidy():            ${f(perOpScoped)} ns/op  (+${f(overheadPerOp)} ns)`);
  console.log(`1100-op model-like sequence on (8, 64):`);
  console.log(`  detailclip: ${sequenceMs.toFixed(2)} ms; outside libtorch: ${(outsideShare * 100).toFixed(1)}%`);
  if (pytorchMs !== null) {
    console.log(
      `  PyTorch eager (python3-torch): ${pytorchMs.toFixed(2)} ms; ratio ${(pytorchMs / sequenceMs).toFixed(2)}x`,
    );
  } else {
    console.log("  PyTorch eager baseline unavailable (/usr/bin/python3 cannot import torch)");
  }
}
