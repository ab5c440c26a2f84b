// safetensors_test.ts: the safetensors reader and writer (src/torch/io.ts) against round trips, the golden files
// written by the official PyTorch code, an independent Python/torch reader and writer, and corrupt files. Every
// test also checks that the native live-handle count returns to where it started.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import type { DType } from "../src/torch/dtype.ts";
import { isFloating } from "../src/torch/dtype.ts";
import {
  liveTensors,
  loadSafeTensors,
  SafeTensorsError,
  SafeTensorsFile,
  Tensor,
  writeSafeTensors,
} from "../src/torch/mod.ts";
import { GOLDEN_DIR, missingTool, pythonModulesMissing } from "./helpers.ts";

const GOLDEN = GOLDEN_DIR;
const PYTHON = "/usr/bin/python3";

/** Registers a test that fails if it leaves native tensor handles alive. */
function leakFreeTest(name: string, fn: (dir: string) => void, ignore = false): void {
  Deno.test({
    name,
    ignore,
    fn() {
      const baseline = liveTensors();
      const dir = Deno.makeTempDirSync({ prefix: "safetensors_test_" });
      try {
        fn(dir);
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
      strictEqual(liveTensors(), baseline, "live native tensor handles did not return to the baseline");
    },
  });
}

function disposeAll(tensors: Iterable<Tensor>): void {
  for (const t of tensors) t.dispose();
}

/** Byte equality that reports the first difference; node's diff of large arrays is slow and unreadable. */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, message: string): void {
  strictEqual(actual.byteLength, expected.byteLength, `${message}: byte length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  strictEqual(at, -1, `${message}: first difference at byte ${at}`);
}

function u16Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Uint16Array.from(values).buffer);
}

/** Elements as bigint for integer and bool dtypes (exact for int64), as numbers for floating dtypes. */
function valuesOf(t: Tensor): (number | bigint)[] {
  const typed = t.toTypedArray();
  if (isFloating(t.dtype)) return Array.from(typed as ArrayLike<number>, Number);
  return Array.from(typed as ArrayLike<number | bigint>, (v) => BigInt(v));
}

interface Sample {
  tensor: Tensor;
  dtype: DType;
  shape: number[];
  values: (number | bigint)[];
}

/** One tensor of every dtype, plus a 0-d scalar, empty tensors and a non-contiguous view, with known values. */
function samples(): Map<string, Sample> {
  const out = new Map<string, Sample>();
  const add = (name: string, tensor: Tensor, values: (number | bigint)[]): void => {
    out.set(name, { tensor, dtype: tensor.dtype, shape: tensor.shape, values });
  };
  const f32 = Float32Array.from([1.5, -0, 3.4028234663852886e38, 1e-45, -7.25, 0.1]);
  add("f32", Tensor.fromArray(f32, [2, 3]), Array.from(f32));
  add("f64", Tensor.fromArray(Float64Array.from([Math.PI, -1e300, 5e-324]), [3]), [Math.PI, -1e300, 5e-324]);
  // float16 and bfloat16 go in as raw bit patterns so the test can demand bit-exact bytes back.
  add(
    "f16",
    Tensor.fromBytes(u16Bytes([0x3c00, 0xc000, 0x7bff, 0x0001, 0xfc00, 0x3555]), [3, 2], { dtype: "float16" }),
    [1, -2, 65504, 2 ** -24, -Infinity, 0.333251953125],
  );
  add(
    "bf16",
    Tensor.fromBytes(u16Bytes([0x3f80, 0xc040, 0x7f7f, 0x0001, 0x7fc0]), [5], { dtype: "bfloat16" }),
    [1, -3, 3.3895313892515355e38, 2 ** -133, NaN],
  );
  const i64 = BigInt64Array.from([2n ** 62n + 1n, -(2n ** 63n), 9007199254740993n, 0n]);
  add("i64", Tensor.fromArray(i64, [2, 2]), Array.from(i64));
  add("i32", Tensor.fromArray(Int32Array.from([-2147483648, 2147483647, 7]), [3]), [-2147483648n, 2147483647n, 7n]);
  add("u8", Tensor.fromArray(Uint8Array.from([0, 255, 128]), [1, 3]), [0n, 255n, 128n]);
  add("bool", Tensor.fromArray([true, false, true, true], [2, 2], { dtype: "bool" }), [1n, 0n, 1n, 1n]);
  add("i8", Tensor.fromArray(Int8Array.from([-128, 127, 0, -1]), [4]), [-128n, 127n, 0n, -1n]);
  add("i16", Tensor.fromArray(Int16Array.from([-32768, 32767, 12345]), [3, 1]), [-32768n, 32767n, 12345n]);
  add("scalar", Tensor.scalar(2.5, { dtype: "float64" }), [2.5]);
  add("empty", Tensor.zeros([0, 4]), []);
  add("empty_i64", Tensor.zeros([3, 0], { dtype: "int64" }), []);
  // A transposed view: the file must hold its logical row-major order, not the storage order.
  {
    using base = Tensor.arange(0, 6);
    using matrix = base.reshape([2, 3]);
    add("transposed", matrix.transpose(0, 1), [0n, 3n, 1n, 4n, 2n, 5n]);
  }
  // Integer-like names: a plain JS object would reorder these, the file must not.
  add("10", Tensor.scalar(10, { dtype: "int32" }), [10n]);
  add("2", Tensor.scalar(2, { dtype: "int32" }), [2n]);
  return out;
}

function tensorsOf(s: Map<string, Sample>): Map<string, Tensor> {
  return new Map([...s].map(([name, sample]) => [name, sample.tensor]));
}

function headerOf(path: string): { length: number; bytes: Uint8Array; json: Record<string, unknown> } {
  const raw = Deno.readFileSync(path);
  const length = Number(new DataView(raw.buffer).getBigUint64(0, true));
  const bytes = raw.subarray(8, 8 + length);
  return { length, bytes, json: JSON.parse(new TextDecoder().decode(bytes)) };
}

// ---- round trips -----------------------------------------------------------------------------------------------

leakFreeTest("round trip of every dtype, a 0-d scalar, empty tensors and a view is exact", (dir) => {
  const s = samples();
  try {
    // The samples' own values are part of the contract: check them before trusting them as the reference.
    for (const [name, sample] of s) deepStrictEqual(valuesOf(sample.tensor), sample.values, `sample ${name}`);
    const path = `${dir}/all.safetensors`;
    writeSafeTensors(path, tensorsOf(s));

    const header = headerOf(path);
    strictEqual(header.length % 8, 0, "header length is a multiple of 8");
    const text = new TextDecoder().decode(header.bytes);
    strictEqual(text.trimEnd().endsWith("}"), true, "header is JSON followed only by space padding");
    ok(header.length - text.trimEnd().length < 8, "no more padding than needed");

    using file = SafeTensorsFile.open(path);
    deepStrictEqual(file.names(), [...s.keys()], "names in the written order");
    deepStrictEqual(file.metadata, {});
    let expectedOffset = 0;
    for (const [name, sample] of s) {
      const entry = header.json[name] as { dtype: string; data_offsets: number[] };
      const info = file.info(name);
      strictEqual(info.dtype, sample.dtype, `${name} dtype`);
      deepStrictEqual(info.shape, sample.shape, `${name} shape`);
      const original = sample.tensor.toBytes();
      strictEqual(info.byteLength, original.byteLength, `${name} byteLength`);
      deepStrictEqual(entry.data_offsets, [expectedOffset, expectedOffset + original.byteLength], `${name} offsets`);
      expectedOffset += original.byteLength;
      assertSameBytes(file.readBytes(name), original, `${name} bytes`);
      using back = file.tensor(name);
      strictEqual(back.dtype, sample.dtype, `${name} tensor dtype`);
      deepStrictEqual(back.shape, sample.shape, `${name} tensor shape`);
      assertSameBytes(back.toBytes(), original, `${name} tensor bytes`);
      deepStrictEqual(valuesOf(back), sample.values, `${name} values`);
    }
    strictEqual(Deno.statSync(path).size, 8 + header.length + expectedOffset, "file is header plus data, nothing more");
    strictEqual((header.json.f16 as { dtype: string }).dtype, "F16");
    strictEqual((header.json.bf16 as { dtype: string }).dtype, "BF16");
    strictEqual((header.json.bool as { dtype: string }).dtype, "BOOL");
    deepStrictEqual(
      Object.keys(header.json).filter((k) => k === "__metadata__"),
      [],
      "no metadata key when none given",
    );
  } finally {
    disposeAll(tensorsOf(s).values());
  }
});

leakFreeTest("a Record input keeps its key order and loadSafeTensors reads everything", (dir) => {
  const path = `${dir}/record.safetensors`;
  const b = Tensor.fromArray([1, 2, 3]);
  const a = Tensor.fromArray(Int16Array.from([4, 5]));
  try {
    writeSafeTensors(path, { b, a });
    const loaded = loadSafeTensors(path);
    try {
      deepStrictEqual([...loaded.keys()], ["b", "a"]);
      deepStrictEqual(loaded.get("b")!.toArray(), [1, 2, 3]);
      strictEqual(loaded.get("a")!.dtype, "int16");
      deepStrictEqual(loaded.get("a")!.toArray(), [4, 5]);
    } finally {
      disposeAll(loaded.values());
    }
  } finally {
    disposeAll([a, b]);
  }
});

leakFreeTest("metadata round trips, including non-ASCII text and JSON escapes", (dir) => {
  const path = `${dir}/meta.safetensors`;
  const metadata = Object.fromEntries([
    ["format", "pt"],
    ["note", "naïve ✓ 漢字"],
    ["quote", 'a"b\\c\n'],
    ["1", "integer-like key"],
    ["__proto__", "a plain key, not a prototype"],
  ]);
  using t = Tensor.ones([2]);
  writeSafeTensors(path, { t }, metadata);
  const header = headerOf(path);
  strictEqual(header.length % 8, 0);
  deepStrictEqual(header.json.__metadata__, metadata);
  using file = SafeTensorsFile.open(path);
  deepStrictEqual(file.metadata, metadata);
  deepStrictEqual(file.names(), ["t"], "__metadata__ is not a tensor name");
  strictEqual(file.has("__metadata__"), false);
  using back = file.tensor("t");
  deepStrictEqual(back.toArray(), [1, 1]);
});

leakFreeTest(
  "writing is atomic: replaces an existing file, leaves no temp file, and a failure keeps the old file",
  (dir) => {
    const path = `${dir}/atomic.safetensors`;
    using first = Tensor.fromArray([1, 2]);
    writeSafeTensors(path, { x: first });
    using second = Tensor.fromArray([3, 4, 5]);
    writeSafeTensors(path, { x: second });
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["atomic.safetensors"]);
    {
      using file = SafeTensorsFile.open(path);
      using x = file.tensor("x");
      deepStrictEqual(x.toArray(), [3, 4, 5]);
    }
    const before = Deno.readFileSync(path);
    const dead = Tensor.fromArray([9]);
    dead.dispose();
    throws(
      () => writeSafeTensors(path, { ok: second, dead }),
      (e) => e instanceof SafeTensorsError && /dead/.test(e.message),
    );
    throws(
      () => writeSafeTensors(path, { x: second }, { bad: 1 as unknown as string }),
      (e) => e instanceof SafeTensorsError && e.message.includes(path),
    );
    deepStrictEqual(Deno.readFileSync(path), before, "a failed write leaves the old file untouched");
    // A failure after the temp file exists (renaming onto a directory) must remove the temp file.
    const blocked = `${dir}/blocked`;
    Deno.mkdirSync(blocked);
    throws(
      () => writeSafeTensors(blocked, { x: second }),
      (e) => e instanceof SafeTensorsError && e.message.includes(blocked),
    );
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["atomic.safetensors", "blocked"]);
    Deno.removeSync(blocked);
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["atomic.safetensors"], "no temp file left behind");
  },
);

leakFreeTest("a closed file refuses reads; tensors land on the requested device", (dir) => {
  const path = `${dir}/closed.safetensors`;
  using t = Tensor.fromArray([7, 8]);
  writeSafeTensors(path, { t });
  const file = SafeTensorsFile.open(path);
  using onCpu = file.tensor("t", { device: "cpu" });
  strictEqual(onCpu.device, "cpu");
  throws(() => file.tensor("missing"), (e) => e instanceof SafeTensorsError && /missing/.test(e.message));
  file.close();
  file.close();
  throws(() => file.tensor("t"), (e) => e instanceof SafeTensorsError && e.message.includes(path));
});

// ---- golden files from the official PyTorch code ---------------------------------------------------------------

const meta = JSON.parse(Deno.readTextFileSync(`${GOLDEN}/meta.json`));

leakFreeTest("golden weights.safetensors: 157 tensors with the shapes meta.json's dims imply", () => {
  const h = meta.hyper;
  using file = SafeTensorsFile.open(`${GOLDEN}/weights.safetensors`);
  const names = file.names();
  strictEqual(names.length, 157);
  strictEqual(new Set(names).size, 157);
  // Every trainable and frozen parameter is there; the only extras are the shared head's last_layer2 duplicates.
  for (const name of [...meta.trainable, ...meta.frozen]) ok(file.has(name), `missing ${name}`);
  deepStrictEqual(
    names.filter((n) => !meta.trainable.includes(n) && !meta.frozen.includes(n)).sort(),
    [
      "ibot_head.last_layer2.weight_g",
      "ibot_head.last_layer2.weight_v",
      "ibot_head_e.last_layer2.weight_g",
      "ibot_head_e.last_layer2.weight_v",
    ],
  );
  const shared = "the shared head's last_layer2 duplicates last_layer";
  assertSameBytes(
    file.readBytes("ibot_head.last_layer2.weight_v"),
    file.readBytes("ibot_head.last_layer.weight_v"),
    shared,
  );
  const patches = (224 / 16) ** 2;
  const expected: Record<string, number[]> = {
    "visual.pos_embed": [1, patches + 1, h.vision_width],
    "visual.patch_embed.proj.weight": [h.vision_width, 3, 16, 16],
    "token_embedding.weight": [h.vocab, h.text_width],
    "ibot_head.last_layer.weight_v": [h.out_dim, h.bottleneck],
    "transformer.resblocks.0.attn.in_proj_weight": [3 * h.text_width, h.text_width],
    "logit_scale": [],
  };
  deepStrictEqual(expected["visual.pos_embed"], [1, 197, 64], "meta.json dims are the ones this test was written for");
  for (const [name, shape] of Object.entries(expected)) {
    const info = file.info(name);
    deepStrictEqual(info.shape, shape, name);
    strictEqual(info.dtype, "float32", name);
    strictEqual(info.byteLength, shape.reduce((a, b) => a * b, 1) * 4, name);
  }
  using pos = file.tensor("visual.pos_embed");
  deepStrictEqual(pos.shape, [1, 197, 64]);
  using scale = file.tensor("logit_scale");
  deepStrictEqual(scale.shape, []);
  ok(Number.isFinite(scale.item()));
});

leakFreeTest("every golden file reads fully with the header's shapes and dtypes", () => {
  const files = [...Deno.readDirSync(GOLDEN)].map((e) => e.name).filter((n) => n.endsWith(".safetensors")).sort();
  deepStrictEqual(files, [
    "after.safetensors",
    "grads.safetensors",
    "inputs.safetensors",
    "outputs.safetensors",
    "weights.safetensors",
  ]);
  let total = 0;
  for (const name of files) {
    const path = `${GOLDEN}/${name}`;
    const header = headerOf(path).json;
    using file = SafeTensorsFile.open(path);
    deepStrictEqual(file.names(), Object.keys(header).filter((k) => k !== "__metadata__"), `${name} names`);
    const all = file.tensors();
    try {
      strictEqual(all.size, file.names().length);
      for (const [tensorName, t] of all) {
        const entry = header[tensorName] as { dtype: string; shape: number[] };
        deepStrictEqual(t.shape, entry.shape, `${name}:${tensorName} shape`);
        strictEqual(file.storedDtype(tensorName), entry.dtype);
        strictEqual(t.dtype, file.info(tensorName).dtype, `${name}:${tensorName} dtype`);
        assertSameBytes(t.toBytes(), file.readBytes(tensorName), `${name}:${tensorName} bytes`);
        total++;
      }
      if (name === "inputs.safetensors") {
        const text = all.get("text")!;
        strictEqual(text.dtype, "int64");
        deepStrictEqual(text.shape, [meta.hyper.batch, meta.hyper.context]);
        strictEqual(Math.max(...text.toArray()), meta.hyper.vocab - 1, "EOT (vocab - 1) is the largest id");
        const momentum = all.get("momentum")!;
        strictEqual(momentum.dtype, "float64");
        deepStrictEqual(momentum.shape, []);
        strictEqual(momentum.item(), meta.momentum);
      }
      if (name === "outputs.safetensors") {
        strictEqual(all.get("mask_u")!.dtype, "bool");
        strictEqual(all.get("loss.loss")!.item(), meta.losses.loss);
      }
    } finally {
      disposeAll(all.values());
    }
  }
  strictEqual(total, 153 + 85 + 4 + 90 + 157);
});

// ---- an independent reader and writer: Python with torch, no safetensors package -------------------------------

const noTorch = missingTool("python3 with torch", pythonModulesMissing(["torch"]));
const pythonSuffix = !noTorch ? "" : ` (skipped: ${PYTHON} cannot import torch)`;

function python(script: string, args: string[]): unknown {
  const out = new Deno.Command(PYTHON, { args: ["-c", script, ...args], stdout: "piped", stderr: "piped" })
    .outputSync();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`python failed:\n${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const PY_COMMON = `
import json, struct, sys, torch
DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool, "I8": torch.int8,
          "I16": torch.int16}
def values(t):
    # Strings keep int64 exact and non-finite floats representable in JSON.
    flat = t.reshape(-1)
    if t.dtype.is_floating_point:
        return [repr(float(x)) for x in flat.double().tolist()]
    return [str(int(x)) for x in flat.to(torch.int64).tolist()]
def raw_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
`;

const PY_READ = PY_COMMON + `
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header_bytes = raw[8:8 + n]
header = json.loads(header_bytes.decode("utf-8"))
data = bytearray(raw[8 + n:])
out = {"header_length": n, "trailing": header_bytes[len(header_bytes.rstrip()):].decode(),
       "metadata": header.pop("__metadata__", None), "names": list(header), "data_length": len(data), "tensors": {}}
for name, e in header.items():
    dtype = DTYPES[e["dtype"]]
    begin, end = e["data_offsets"]
    size = torch.empty((), dtype=dtype).element_size()
    if end > begin:
        t = torch.frombuffer(data, dtype=dtype, count=(end - begin) // size, offset=begin).reshape(e["shape"])
    else:
        t = torch.empty(e["shape"], dtype=dtype)
    out["tensors"][name] = {"dtype": str(t.dtype), "shape": list(t.shape), "values": values(t), "offsets": [begin, end]}
print(json.dumps(out))
`;

function fromPython(values: string[], dtype: DType): (number | bigint)[] {
  if (!isFloating(dtype)) return values.map((v) => BigInt(v));
  const special: Record<string, number> = { nan: NaN, inf: Infinity, "-inf": -Infinity };
  return values.map((v) => v in special ? special[v] : Number(v));
}

const torchNames: Record<DType, string> = {
  float32: "torch.float32",
  float64: "torch.float64",
  float16: "torch.float16",
  bfloat16: "torch.bfloat16",
  int64: "torch.int64",
  int32: "torch.int32",
  uint8: "torch.uint8",
  bool: "torch.bool",
  int8: "torch.int8",
  int16: "torch.int16",
};

leakFreeTest(`our writer agrees with an independent Python/torch reader${pythonSuffix}`, (dir) => {
  const s = samples();
  try {
    const path = `${dir}/for_python.safetensors`;
    const metadata = { producer: "detailclip", "ü": "✓" };
    writeSafeTensors(path, tensorsOf(s), metadata);
    const py = python(PY_READ, [path]) as {
      header_length: number;
      trailing: string;
      metadata: Record<string, string>;
      names: string[];
      data_length: number;
      tensors: Record<string, { dtype: string; shape: number[]; values: string[]; offsets: number[] }>;
    };
    strictEqual(py.header_length % 8, 0);
    ok(/^ *$/.test(py.trailing) && py.trailing.length < 8, "header padded with fewer than 8 spaces");
    deepStrictEqual(py.metadata, metadata);
    deepStrictEqual(py.names, [...s.keys()]);
    let bytes = 0;
    for (const [name, sample] of s) {
      const seen = py.tensors[name];
      strictEqual(seen.dtype, torchNames[sample.dtype], `${name} dtype`);
      deepStrictEqual(seen.shape, sample.shape, `${name} shape`);
      deepStrictEqual(fromPython(seen.values, sample.dtype), sample.values, `${name} values`);
      deepStrictEqual(seen.offsets[0], bytes, `${name} starts where the previous tensor ended`);
      bytes = seen.offsets[1];
    }
    strictEqual(py.data_length, bytes, "the data section holds exactly the tensors");
  } finally {
    disposeAll(tensorsOf(s).values());
  }
}, noTorch);

const PY_WRITE = PY_COMMON + `
tensors = {
    "z.f16": torch.tensor([[1.0, -2.0], [65504.0, 0.1]], dtype=torch.float16),
    "a.bf16": torch.tensor([1.0, -3.0, 0.1, float("inf")], dtype=torch.bfloat16),
    "10": torch.arange(12, dtype=torch.int64).reshape(3, 4) * (2 ** 50) + 1,
    "2": torch.tensor(True),
    "m.f64": torch.tensor([[1.0 / 3.0]], dtype=torch.float64),
    "f32.t": torch.arange(6, dtype=torch.float32).reshape(2, 3).t() * 0.5,
    "i32": torch.tensor([-(2 ** 31), 2 ** 31 - 1], dtype=torch.int32),
    "u8": torch.tensor([[0, 200, 255]], dtype=torch.uint8),
    "i8": torch.tensor([-128, 5], dtype=torch.int8),
    "i16": torch.tensor([[-32768], [32767]], dtype=torch.int16),
    "mask": torch.tensor([[True, False, True]]),
    "empty": torch.zeros(0, 2),
}
NAMES = {v: k for k, v in DTYPES.items()}
# Data in reverse header order and an unpadded header: both are legal, and the reader must not assume otherwise.
chunks, offset, header = [], 0, {"__metadata__": {"source": "python"}}
blobs = {name: raw_bytes(t) for name, t in tensors.items()}
for name in reversed(list(tensors)):
    chunks.append(blobs[name])
    offset += len(blobs[name])
offset_of, at = {}, 0
for name in reversed(list(tensors)):
    offset_of[name] = at
    at += len(blobs[name])
for name, t in tensors.items():
    header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                    "data_offsets": [offset_of[name], offset_of[name] + len(blobs[name])]}
text = json.dumps(header).encode("utf-8")
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for chunk in chunks:
        f.write(chunk)
print(json.dumps({"header_length": len(text), "tensors": {name: {"shape": list(t.shape), "values": values(t),
    "bytes": blobs[name].hex()} for name, t in tensors.items()}}))
`;

leakFreeTest(`our reader agrees with an independent Python/torch writer${pythonSuffix}`, (dir) => {
  const path = `${dir}/from_python.safetensors`;
  const py = python(PY_WRITE, [path]) as {
    header_length: number;
    tensors: Record<string, { shape: number[]; values: string[]; bytes: string }>;
  };
  // Pairs, not an object literal: an object would move "10" and "2" to the front.
  const dtypes: [string, DType][] = [
    ["z.f16", "float16"],
    ["a.bf16", "bfloat16"],
    ["10", "int64"],
    ["2", "bool"],
    ["m.f64", "float64"],
    ["f32.t", "float32"],
    ["i32", "int32"],
    ["u8", "uint8"],
    ["i8", "int8"],
    ["i16", "int16"],
    ["mask", "bool"],
    ["empty", "float32"],
  ];

  using file = SafeTensorsFile.open(path);
  deepStrictEqual(file.names(), dtypes.map(([name]) => name), "header order, integer-like names included");
  deepStrictEqual(file.metadata, { source: "python" });
  const all = file.tensors();
  try {
    for (const [name, dtype] of dtypes) {
      const expected = py.tensors[name];
      const t = all.get(name)!;
      strictEqual(t.dtype, dtype, `${name} dtype`);
      deepStrictEqual(t.shape, expected.shape, `${name} shape`);
      const hex = Array.from(file.readBytes(name), (b) => b.toString(16).padStart(2, "0")).join("");
      strictEqual(hex, expected.bytes, `${name} bytes`);
      deepStrictEqual(valuesOf(t), fromPython(expected.values, dtype), `${name} values`);
    }
  } finally {
    disposeAll(all.values());
  }
}, noTorch);

// ---- corrupt and unsupported files ------------------------------------------------------------------------------

/** Writes a file from a header text and data, optionally with a lying header length. */
function rawFile(path: string, header: string, data = new Uint8Array(0), headerLength?: bigint): string {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  Deno.writeFileSync(path, out);
  return path;
}

function assertCorrupt(fn: () => unknown, path: string, pattern: RegExp, tensorName?: string): void {
  throws(fn, (e: unknown) => {
    ok(e instanceof SafeTensorsError, `expected a SafeTensorsError, got ${e}`);
    ok(e.message.includes(path), `message names the file: ${e.message}`);
    ok(pattern.test(e.message), `message ${JSON.stringify(e.message)} matches ${pattern}`);
    strictEqual(e.path, path);
    if (tensorName !== undefined) {
      ok(e.message.includes(tensorName), `message names the tensor: ${e.message}`);
      strictEqual(e.tensorName, tensorName);
    }
    return true;
  });
}

const open = (path: string) => (): void => SafeTensorsFile.open(path).close();

leakFreeTest("truncated files are rejected with the path in the message", (dir) => {
  const good = `${dir}/good.safetensors`;
  using t = Tensor.fromArray([1, 2, 3, 4]);
  writeSafeTensors(good, { weight: t });
  const bytes = Deno.readFileSync(good);

  const cut = `${dir}/cut.safetensors`;
  Deno.writeFileSync(cut, bytes.subarray(0, bytes.byteLength - 3));
  assertCorrupt(open(cut), cut, /run past the 13-byte data section/, "weight");

  const tiny = `${dir}/tiny.safetensors`;
  Deno.writeFileSync(tiny, bytes.subarray(0, 5));
  assertCorrupt(open(tiny), tiny, /5 bytes, shorter than the 8-byte header length/);

  const headerOnly = `${dir}/header_cut.safetensors`;
  Deno.writeFileSync(headerOnly, bytes.subarray(0, 20));
  assertCorrupt(open(headerOnly), headerOnly, /header length \d+ exceeds the 12 bytes after it/);

  const missing = `${dir}/does_not_exist.safetensors`;
  assertCorrupt(open(missing), missing, /cannot open/);
});

leakFreeTest("bad header lengths, invalid JSON and missing fields are rejected", (dir) => {
  const entry = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const data = new Uint8Array(8);
  const p = (name: string): string => `${dir}/${name}.safetensors`;

  assertCorrupt(open(rawFile(p("huge"), entry, data, 1n << 40n)), p("huge"), /exceeds the 100000000-byte limit/);
  assertCorrupt(open(rawFile(p("u64max"), entry, data, (1n << 64n) - 1n)), p("u64max"), /exceeds the 100000000/);
  assertCorrupt(open(rawFile(p("long"), entry, data, 1000n)), p("long"), /exceeds the \d+ bytes after it/);
  assertCorrupt(open(rawFile(p("json"), '{"x": {"dtype": "F32",', data)), p("json"), /not valid JSON/);
  assertCorrupt(open(rawFile(p("array"), "[1, 2]", data)), p("array"), /not a JSON object/);
  const badUtf8 = p("bad_utf8");
  Deno.writeFileSync(badUtf8, Uint8Array.from([4, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0xff, 0xfe, 0x7d]));
  assertCorrupt(open(badUtf8), badUtf8, /not valid UTF-8/);

  const x = "x";
  const missing: [string, string, RegExp, string | undefined][] = [
    ["no_dtype", '{"x":{"shape":[2],"data_offsets":[0,8]}}', /'dtype'/, x],
    ["no_shape", '{"x":{"dtype":"F32","data_offsets":[0,8]}}', /'shape'/, x],
    ["no_offsets", '{"x":{"dtype":"F32","shape":[2]}}', /'data_offsets'/, x],
    ["one_offset", '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}}', /'data_offsets'/, x],
    ["neg_dim", '{"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', /not a non-negative integer/, x],
    ["frac_dim", '{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', /not a non-negative integer/, x],
    ["str_offset", '{"x":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}}', /not non-negative integers/, x],
    ["not_object", '{"x":[1,2]}', /not a JSON object/, x],
    ["dup", `{"x":${entry.slice(5, -1)},"x":${entry.slice(5, -1)}}`, /twice/, x],
    [
      "meta_value",
      '{"__metadata__":{"k":1},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
      /not a string/,
      undefined,
    ],
  ];
  for (const [name, header, pattern, tensorName] of missing) {
    const path = rawFile(p(name), header, data);
    assertCorrupt(open(path), path, pattern, tensorName);
  }
});

leakFreeTest("data offsets out of range or not matching the shape are rejected; overlaps are allowed", (dir) => {
  const p = (name: string): string => `${dir}/${name}.safetensors`;
  const data = new Uint8Array(16);
  const cases: [string, string, RegExp][] = [
    ["past_end", '{"w":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}}', /run past the 16-byte data section/],
    ["backwards", '{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}', /end before they begin/],
    ["too_small", '{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}', /hold 12 bytes but F32\[4\] needs 16/],
    ["too_big", '{"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,16]}}', /hold 16 bytes but F16\[2, 2\] needs 8/],
  ];
  for (const [name, header, pattern] of cases) {
    assertCorrupt(open(rawFile(p(name), header, data)), p(name), pattern, "w");
  }

  // Two tensors sharing bytes: legal per the spec, so both read.
  const shared = rawFile(
    p("overlap"),
    '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[3],"data_offsets":[4,16]}}',
    Uint8Array.from([0, 0, 128, 63, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0]),
  );
  using file = SafeTensorsFile.open(shared);
  using a = file.tensor("a");
  using b = file.tensor("b");
  deepStrictEqual(a.toArray(), [1, 9.80908925027372e-45]);
  deepStrictEqual(b.toArray(), [7, 8, 9]);

  // A bool byte other than 0 or 1 is not a bool.
  const badBool = rawFile(
    p("bool"),
    '{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}',
    Uint8Array.from([1, 2]),
  );
  using boolFile = SafeTensorsFile.open(badBool);
  assertCorrupt(() => boolFile.tensor("m"), badBool, /byte value 2/, "m");
});

leakFreeTest("unknown dtypes fail when that tensor is read, not when the file is opened", (dir) => {
  const path = rawFile(
    `${dir}/fp8.safetensors`,
    '{"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' +
      '"fp8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[4,8]},' +
      '"u16":{"dtype":"U16","shape":[2],"data_offsets":[4,8]},' +
      '"proto":{"dtype":"constructor","shape":[1],"data_offsets":[4,8]}}',
    Uint8Array.from([0, 0, 64, 64, 1, 2, 3, 4]),
  );
  using file = SafeTensorsFile.open(path);
  deepStrictEqual(file.names(), ["ok", "fp8", "u16", "proto"]);
  assertCorrupt(() => file.tensor("proto"), path, /unsupported dtype 'constructor'/, "proto");
  strictEqual(file.storedDtype("fp8"), "F8_E4M3");
  using ok3 = file.tensor("ok");
  deepStrictEqual(ok3.toArray(), [3]);
  assertCorrupt(() => file.tensor("fp8"), path, /unsupported dtype 'F8_E4M3'/, "fp8");
  assertCorrupt(() => file.readBytes("u16"), path, /unsupported dtype 'U16'/, "u16");
  assertCorrupt(() => file.info("u16"), path, /unsupported dtype 'U16'/, "u16");
  assertCorrupt(() => file.tensors(), path, /unsupported dtype 'F8_E4M3'/, "fp8");
  assertCorrupt(() => loadSafeTensors(path), path, /unsupported dtype/, "fp8");
});
