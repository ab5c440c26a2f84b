// official_checkpoint_test.ts: interoperability with the official PyTorch code. Official-format checkpoints are
// written here by Debian's python3-torch (tests/official_fixtures.py, torch.save as main.py does it), then read by
// our importer: the golden weights round-trip bit for bit (strided views included) and reproduce the golden step;
// hostile and truncated files are refused with clear errors and nothing runs; exported backbones load with
// torch.load and match a timm ViT's keys and shapes; an official-format copy of one of our checkpoints evaluates to
// the same numbers and resumes training with the same weights and AdamW moments. Skipped without python3 + torch.
import { runExport } from "../cli/export.ts";
import { PickleError, readPickle } from "../src/formats/pickle.ts";
import { syntheticEvalDataset } from "../src/eval/datasets.ts";
import { EvalModelError, loadEvalModel } from "../src/eval/model.ts";
import { runZeroShot } from "../src/eval/run.ts";
import { buildModel } from "../src/models/build.ts";
import { modelPreset, parseModelConfig } from "../src/models/configs.ts";
import { liveTensors, loadSafeTensors, noGrad, SafeTensorsFile, Tensor, tidy } from "../src/torch/mod.ts";
import { asStrided, PtFile, PtFileError, savePt } from "../src/torch/pt_file.ts";
import { loadCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { train } from "../src/train/loop.ts";
import {
  OfficialCheckpointError,
  officialModelConfig,
  openOfficialCheckpoint,
} from "../src/checkpoint/official_checkpoint.ts";
import { restoreOfficialTraining } from "../src/train/official_resume.ts";
import { AdamW, officialParamGroups } from "../src/train/optimizer.ts";
import { parseTrainOptions } from "../src/train/options.ts";
import {
  assert,
  assertEquals,
  assertThrows,
  GOLDEN_DIR,
  missingTool,
  pylibEnv,
  pythonModulesMissing,
  quietly,
} from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const FIXTURES = new URL("./official_fixtures.py", import.meta.url).pathname;
const EXPORT_CHECK = new URL("./export_check.py", import.meta.url).pathname;
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;

const noTorch = missingTool("python3 with torch", pythonModulesMissing(["torch"]));

function python(args: string[]): string {
  const out = new Deno.Command(PYTHON, { args, env: pylibEnv(), stdout: "piped", stderr: "piped" }).outputSync();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success, `python3 ${args.join(" ")} failed:\n${text}`);
  return text;
}

/** A test that must leave no native handle behind. */
function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({
    name: `official checkpoints: ${name}`,
    ignore: noTorch,
    fn: async () => {
      const before = liveTensors();
      await fn();
      assertEquals(liveTensors(), before, "live tensors after the test");
    },
  });
}

/** Folders of the fixtures shared between tests, removed when the test module unloads. */
const sharedDirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const dir of sharedDirs) Deno.removeSync(dir, { recursive: true });
});

let goldenPtPath: string | null = null;
/** tests/fixtures/golden/tiny as an official checkpoint (written once per test run). */
function goldenPt(): string {
  if (goldenPtPath === null) {
    const dir = Deno.makeTempDirSync({ prefix: "dc_official_golden_" });
    sharedDirs.push(dir);
    const path = `${dir}/checkpoint.pt`;
    // The trainable parameters in named_parameters order (meta.json lists them sorted): our model registers its
    // members in the official order, which is the order torch.optim's state_dict numbers them in.
    const model = buildModel(modelPreset("tiny"));
    const order = model.namedTrainableParameters().map(([name]) => name);
    model.dispose();
    Deno.writeTextFileSync(`${dir}/order.json`, JSON.stringify(order));
    python([
      FIXTURES,
      "golden",
      `${GOLDEN_DIR}/weights.safetensors`,
      `${GOLDEN_DIR}/meta.json`,
      path,
      `${dir}/order.json`,
    ]);
    goldenPtPath = path;
  }
  return goldenPtPath;
}

function bytesEqual(a: Tensor, b: Tensor): boolean {
  const x = a.toBytes(), y = b.toBytes();
  return a.dtype === b.dtype && x.byteLength === y.byteLength && x.every((v, i) => v === y[i]);
}

// ---- reading ------------------------------------------------------------------------------------------------------

test("the golden weights as an official .pt: every tensor bit for bit, strided views included, args and epoch", () => {
  using checkpoint = openOfficialCheckpoint(goldenPt());
  const reference = loadSafeTensors(`${GOLDEN_DIR}/weights.safetensors`);
  try {
    assertEquals(checkpoint.weights.size, reference.size, "state dict size (module. stripped)");
    for (const [name, expected] of reference) {
      const ref = checkpoint.weights.get(name);
      assert(ref !== undefined, `${name} missing after stripping module.`);
      using got = checkpoint.file.tensor(ref);
      assertEquals(got.shape, expected.shape, name);
      assert(bytesEqual(got, expected), `${name}: values differ from weights.safetensors`);
    }
    // The fixture saved these as views: a transpose and an offset slice of a larger storage.
    assert(!checkpoint.weights.get("visual.blocks.0.attn.qkv.weight")!.contiguous, "the qkv weight is strided");
    assert(checkpoint.weights.get("token_embedding.weight")!.offset > 0, "the token embedding has an offset");
    assertEquals(checkpoint.args.get("model"), "tiny");
    assertEquals(checkpoint.args.get("mask_ratio"), 0.5);
    assertEquals([checkpoint.epoch, checkpoint.bestAcc], [3, 12.5]);
    const config = officialModelConfig(checkpoint);
    assertEquals([config.name, config.vision.width, config.text.vocab], ["tiny", 64, 512]);
    // A real torch AdamW state over Python's own grouping rule (decay first; bias/ln/bn/ndim<2 exempt): our official
    // groups must take its moments one to one.
    const model = buildModel(config);
    const optimizer = new AdamW(officialParamGroups(model.namedParameters(), 0.5), { betas: [0.9, 0.98], eps: 1e-8 });
    try {
      const parts = { model, modelName: config.name, optimizer, scaler: null, device: "cpu" as const };
      const resumed = restoreOfficialTraining(checkpoint, parts, 10);
      assertEquals(resumed.optimizer, { loaded: true, stepCount: 1 });
      assertEquals(resumed.step, 30, "epoch 3 of 10 steps");
    } finally {
      optimizer.dispose();
      model.dispose();
    }
  } finally {
    for (const t of reference.values()) t.dispose();
  }
});

test("deno task golden --weights official.pt reproduces the golden step within its tolerances", () => {
  const out = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-ffi", MAIN, "golden", "--ref", GOLDEN_DIR, "--weights", goldenPt()],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, `golden with the imported weights failed:\n${text}`);
  for (const file of ["outputs", "grads", "after"]) assert(text.includes(`PASS ${file}.safetensors`), text);
});

test("a preset that does not fit the weights is an error naming the key and both shapes", () => {
  const error = assertThrows(
    () => loadEvalModel(goldenPt(), { model: "tiny_synthetic" }),
    EvalModelError,
    ["do not fit model 'tiny_synthetic'", "visual.pos_embed is [1, 197, 64] in the file but [1, 65, 64] in the model"],
  );
  assert(error.message.includes("--model"), error.message);
  using checkpoint = openOfficialCheckpoint(goldenPt());
  assertThrows(() => officialModelConfig(checkpoint, { model: "no_such_model" }), OfficialCheckpointError, [
    "--model is 'no_such_model'",
    "DetailCLIP_VITB16",
  ]);
  // A tokenizer whose vocabulary is not the checkpoint's is named as such, not as a wrong architecture.
  assertThrows(() => officialModelConfig(checkpoint, { vocab: 600 }), OfficialCheckpointError, [
    "has 600 tokens, but token_embedding.weight has 512 rows",
  ]);
});

test("as_strided rebuilds views of a storage, and refuses one that leaves it", () => {
  tidy(() => {
    const storage = Tensor.fromArray([0, 1, 2, 3, 4, 5, 6], [7]);
    assertEquals(asStrided(storage, [2, 3], [1, 2], 1).toArray(), [1, 3, 5, 2, 4, 6]);
    assertThrows(() => asStrided(storage, [2, 3], [3, 1], 2), Error, ["as_strided"]);
  });
});

// ---- refusing what is not a checkpoint ----------------------------------------------------------------------------

test("a pickle that calls os.system is refused with the global's name, and nothing runs", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_official_hostile_" });
  try {
    const marker = `${dir}/pwned`;
    python([FIXTURES, "hostile", `${dir}/hostile.pt`, marker]);
    const error = assertThrows(() => openOfficialCheckpoint(`${dir}/hostile.pt`), PtFileError, [
      "refusing pickle opcode GLOBAL",
      "posix.system",
    ]);
    assert(error.message.includes(`${dir}/hostile.pt`), error.message);
    assertThrows(() => loadEvalModel(`${dir}/hostile.pt`), EvalModelError, ["posix.system"]);
    assert(!existsSync(marker), "the hostile pickle's command ran");
    // The plain-data reader (YFCC metadata) still refuses persistent ids and BUILD as it did.
    assertThrows(() => readPickle(new Uint8Array([0x80, 0x02, 0x4b, 0x01, 0x51, 0x2e])), PickleError, ["BINPERSID"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

test("a truncated or damaged .pt is a clear error, never a crash", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_official_damaged_" });
  try {
    const bytes = Deno.readFileSync(goldenPt());
    Deno.writeFileSync(`${dir}/truncated.pt`, bytes.subarray(0, Math.floor(bytes.byteLength * 0.6)));
    assertThrows(() => openOfficialCheckpoint(`${dir}/truncated.pt`), PtFileError, [
      `${dir}/truncated.pt`,
      "damaged or truncated zip archive",
    ]);
    Deno.writeFileSync(`${dir}/empty.pt`, new Uint8Array(0));
    assertThrows(() => openOfficialCheckpoint(`${dir}/empty.pt`), PtFileError, ["not a torch.save zip archive"]);
    // A flipped byte inside a storage: the archive's CRC-32 catches it when that tensor is read.
    using clean = PtFile.open(goldenPt());
    const flipped = bytes.slice();
    const at = findStorage(flipped, clean);
    flipped[at] ^= 0xff;
    Deno.writeFileSync(`${dir}/flipped.pt`, flipped);
    using damaged = openOfficialCheckpoint(`${dir}/flipped.pt`);
    assertThrows(
      () => [...damaged.weights.values()].forEach((ref) => damaged.file.tensor(ref).dispose()),
      PtFileError,
      ["CRC-32 mismatch"],
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** The byte offset of the middle of the largest storage's data inside the archive. */
function findStorage(bytes: Uint8Array, file: PtFile): number {
  const root = file.root as Map<string, unknown>;
  const stateDict = root.get("state_dict") as Map<string, { storage: { key: string; numel: number } }>;
  const largest = [...stateDict.values()].reduce((a, b) => (b.storage.numel > a.storage.numel ? b : a));
  // The member's local header holds its name; the data follows the header (torch pads it with an extra field).
  const name = new TextEncoder().encode(`data/${largest.storage.key}`);
  for (let i = 0; i + name.length < bytes.length; i++) {
    if (bytes[i] === 0x50 && bytes[i + 1] === 0x4b && bytes[i + 2] === 0x03 && bytes[i + 3] === 0x04) {
      const view = new DataView(bytes.buffer, bytes.byteOffset + i);
      const nameLength = view.getUint16(26, true), extraLength = view.getUint16(28, true);
      const stored = bytes.subarray(i + 30 + nameLength - name.length, i + 30 + nameLength);
      if (stored.every((b, k) => b === name[k])) return i + 30 + nameLength + extraLength + largest.storage.numel * 2;
    }
  }
  throw new Error("storage member not found");
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

// ---- writing ------------------------------------------------------------------------------------------------------

test("savePt: torch.load returns a dict with our keys, dtypes and values, and we read it back", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_official_save_" });
  try {
    tidy(() => {
      const a = Tensor.fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
      const tensors = new Map<string, Tensor>([
        ["blocks.0.weight", a.transpose(0, 1)], // a strided view: written as its own contiguous storage
        ["half", a.to({ dtype: "float16" })],
        ["ids", Tensor.fromArray([7, -1], [2], { dtype: "int64" })],
        ["flag", Tensor.fromArray([1, 0, 1], [3], { dtype: "bool" })],
        ["scalar", Tensor.fromArray([2.5], [])],
      ]);
      savePt(`${dir}/x.pt`, tensors);
      const script = "import sys, torch, json\nd = torch.load(sys.argv[1])\nassert type(d) is dict, type(d)\n" +
        "print(json.dumps([[k, str(v.dtype), list(v.shape), v.float().flatten().tolist()] for k, v in d.items()]))";
      const printed = JSON.parse(python(["-c", script, `${dir}/x.pt`]));
      assertEquals(printed, [
        ["blocks.0.weight", "torch.float32", [3, 2], [1, 4, 2, 5, 3, 6]],
        ["half", "torch.float16", [2, 3], [1, 2, 3, 4, 5, 6]],
        ["ids", "torch.int64", [2], [7, -1]],
        ["flag", "torch.bool", [3], [1, 0, 1]],
        ["scalar", "torch.float32", [], [2.5]],
      ]);
      using back = PtFile.open(`${dir}/x.pt`);
      const root = back.root as Map<string, never>;
      assertEquals([...root.keys()], [...tensors.keys()]);
      for (const [name, t] of tensors) assert(bytesEqual(back.tensor(root.get(name)!), t.contiguous()), name);
    });
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["x.pt"], "no temporary file left behind");
    tidy(() =>
      assertThrows(() => savePt(`${dir}/missing/x.pt`, { a: Tensor.zeros([1]) }), PtFileError, ["cannot create"])
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

test("export backbone --out X.pt: torch.load gives timm's keys and shapes and the checkpoint's values", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_official_export_" });
  try {
    const sizes = ["64", "2", "16", "224", "--heads", "4"]; // the golden dims: width, depth, patch, image size, heads
    for (const teacher of [false, true]) {
      const out = `${dir}/backbone-${teacher ? "teacher" : "student"}.pt`;
      const args = ["backbone", "--checkpoint", goldenPt(), "--out", out, ...(teacher ? ["--teacher"] : [])];
      assertEquals(quietly(() => runExport(args)), 0, "export exit code");
      const prefix = teacher ? "visual_ema." : "visual.";
      const text = python([EXPORT_CHECK, out, ...sizes, "--values", `${GOLDEN_DIR}/weights.safetensors`, prefix]);
      assert(text.startsWith("ok 30"), `export_check.py (teacher=${teacher}): ${text}`);
    }
    // The check can fail: the student's tensors are not the teacher's (the golden teacher was perturbed).
    const wrong = new Deno.Command(PYTHON, {
      env: pylibEnv(),
      args: [
        EXPORT_CHECK,
        `${dir}/backbone-student.pt`,
        ...sizes,
        "--values",
        `${GOLDEN_DIR}/weights.safetensors`,
        "visual_ema.",
      ],
      stdout: "piped",
    }).outputSync();
    assert(!wrong.success && new TextDecoder().decode(wrong.stdout).includes("values differ"), "a wrong tower passes");
    // From one of our checkpoints (64 px, patch 8): the same check against its `model.visual.` tensors.
    const { checkpoint } = await ourCheckpoint();
    const out = `${dir}/ours.pt`;
    assertEquals(quietly(() => runExport(["backbone", "--checkpoint", checkpoint, "--out", out])), 0);
    const oursSizes = ["64", "2", "8", "64", "--heads", "4"];
    const text = python([EXPORT_CHECK, out, ...oursSizes, "--values", checkpoint, "model.visual."]);
    assert(text.startsWith("ok 30"), `export_check.py (ours): ${text}`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- our checkpoint in the official format: evaluation and continued training ------------------------------------

const RUN = ["--synthetic-size", "32", "--batch-size", "8", "--epochs", "2", "--eval-size", "0", "--threads", "1"];

let ourRun: { dir: string; checkpoint: string; official: string; bpe: string } | null = null;
/** Four steps (one epoch) of tiny_synthetic, and an official-format copy of its checkpoint (epoch 1). */
async function ourCheckpoint(): Promise<{ dir: string; checkpoint: string; official: string; bpe: string }> {
  if (ourRun === null) {
    const dir = Deno.makeTempDirSync({ prefix: "dc_official_ours_" });
    sharedDirs.push(dir);
    await train(parseTrainOptions([...RUN, "--max-steps", "4", "--output-dir", `${dir}/run`]), () => {});
    const checkpoint = `${dir}/run/checkpoint-00000004.safetensors`;
    const official = `${dir}/official.pt`;
    python([FIXTURES, "from-ours", checkpoint, official, "1"]);
    const { tensors, meta } = loadCheckpoint(checkpoint);
    for (const t of tensors.values()) t.dispose();
    const bpe = `${dir}/merges.txt`;
    Deno.writeTextFileSync(bpe, ["#version: 0.2", ...(meta.tokenizer_merges as string[])].join("\n") + "\n");
    ourRun = { dir, checkpoint, official, bpe };
  }
  return ourRun;
}

test("eval: an official-format copy of our checkpoint gives the same zero-shot numbers and embeddings", async () => {
  const { checkpoint, official, bpe } = await ourCheckpoint();
  const dataset = syntheticEvalDataset({ split: "val", imageSize: 64, size: 48, objects: 1 });
  for (const ema of [false, true]) {
    const ours = loadEvalModel(checkpoint, { ema });
    const imported = loadEvalModel(official, { ema, bpe });
    try {
      assertEquals(imported.model.config.text.vocab, ours.model.config.text.vocab, "vocabulary from --bpe");
      const a = runZeroShot(ours, dataset, { batchSize: 24, device: "cpu" });
      const b = runZeroShot(imported, dataset, { batchSize: 24, device: "cpu" });
      assertEquals(b, a, `zero-shot results (ema=${ema})`);
      noGrad(() =>
        tidy(() => {
          const images = Tensor.randn([2, 3, 64, 64]);
          assert(bytesEqual(imported.encodeImage(images), ours.encodeImage(images)), `image embeddings (ema=${ema})`);
          const ids = ours.tokenize(["a red circle", "a large blue square in the center"]);
          assert(bytesEqual(imported.encodeText(ids), ours.encodeText(ids)), `text embeddings (ema=${ema})`);
        })
      );
    } finally {
      ours.dispose();
      imported.dispose();
    }
  }
  // Without --bpe the weights load (probes and export need no text), and text asks for it.
  const noText = loadEvalModel(official);
  try {
    assertThrows(() => noText.tokenize(["a red circle"]), EvalModelError, ["carries no tokenizer", "--bpe"]);
  } finally {
    noText.dispose();
  }
});

test("continued training: weights, AdamW moments and step count restored; --resume official.pt trains on", async () => {
  const { dir, checkpoint, official } = await ourCheckpoint();
  const { tensors, meta } = loadCheckpoint(checkpoint);
  try {
    const config = parseModelConfig(meta.model_config, "meta.model_config");
    const model = buildModel(config);
    const optimizer = new AdamW(officialParamGroups(model.namedParameters(), 0.5), { betas: [0.9, 0.98], eps: 1e-8 });
    try {
      using file = openOfficialCheckpoint(official);
      const resumed = restoreOfficialTraining(file, {
        model,
        modelName: config.name,
        optimizer,
        scaler: null,
        device: "cpu",
      }, 4);
      assertEquals([resumed.step, resumed.epoch], [4, 1]);
      assert(resumed.optimizer.loaded, `optimizer not restored: ${JSON.stringify(resumed.optimizer)}`);
      assertEquals(optimizer.stepCount, meta.optimizer_steps, "AdamW step count");
      for (const [key, value] of model.stateDict()) assert(bytesEqual(value, tensors.get(`model.${key}`)!), key);
      let moments = 0;
      for (const [key, value] of optimizer.stateTensors()) {
        assert(bytesEqual(value, tensors.get(`optimizer.${key}`)!), `moment ${key}`);
        moments += 1;
      }
      assert(moments > 50, `${moments} moments compared`);
      // Moments that do not map one to one (here: our groups in the other order) are not forced in.
      const swapped = new AdamW(officialParamGroups(model.namedParameters(), 0.5).reverse(), {
        betas: [0.9, 0.98],
        eps: 1e-8,
      });
      try {
        const parts = { model, modelName: config.name, optimizer: swapped, scaler: null, device: "cpu" as const };
        const weightsOnly = restoreOfficialTraining(file, parts, 4);
        assert(!weightsOnly.optimizer.loaded, "swapped groups must not take the moments");
        assert(weightsOnly.optimizer.reason.startsWith("parameter group 0"), weightsOnly.optimizer.reason);
        assertEquals(swapped.stepCount, 0);
      } finally {
        swapped.dispose();
      }
    } finally {
      optimizer.dispose();
      model.dispose();
    }
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
  // The command: --resume official.pt continues from epoch 1 (step 4) and saves its own checkpoints.
  const lines: string[] = [];
  const summary = await train(
    parseTrainOptions([...RUN, "--max-steps", "6", "--resume", official, "--output-dir", `${dir}/resumed`]),
    (line) => lines.push(line),
  );
  const resumeLine = lines.find((l) => l.startsWith("resume: official checkpoint")) ?? "";
  assert(resumeLine.includes("epoch 1 -> step 4"), resumeLine);
  assert(resumeLine.includes(`AdamW moments and step count (${meta.optimizer_steps}) restored`), resumeLine);
  assert(resumeLine.includes("iBOT centers start at zero"), resumeLine);
  assertEquals(summary.steps, 6);
  using saved = SafeTensorsFile.open(`${dir}/resumed/checkpoint-00000006.safetensors`);
  assert(saved.has("model.visual.cls_token"), "the continued run saved a checkpoint of its own");
  // The wrong --model for the file: one line naming the key and both shapes, exit status 2 (a usage error).
  const args = [...RUN, "--model", "tiny", "--resume", official, "--output-dir", `${dir}/wrong`];
  const out = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-ffi", MAIN, "train", ...args],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 2, stderr);
  assert(stderr.includes("--resume") && stderr.includes("visual.pos_embed is [1, 65, 64] in the file"), stderr);
});
