// train_test.ts: the training loop as a user drives it (the CLI in a subprocess): option errors that name the
// option, schedules against the official formulas, exact resume after SIGKILL (bitwise equal parameters), a
// corrupted newest checkpoint skipped by --resume auto, and an injected NaN stopping the run with step and term.
import { loadCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { OptionError, parseTrainOptions } from "../src/train/options.ts";
import { cosineValue, emaMomentum } from "../src/train/schedules.ts";
import { assert, assertClose, assertEquals, assertThrows } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;
const SMALL = [
  "--synthetic-size",
  "256",
  "--batch-size",
  "8",
  "--epochs",
  "2",
  "--max-steps",
  "12",
  "--save-freq",
  "3",
  "--eval-size",
  "0",
  "--print-freq",
  "2",
  "--threads",
  "1",
  "--keep-last",
  "10",
];

function trainCommand(args: string[], env: Record<string, string> = {}): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-ffi", main, "train", ...args],
    stdout: "piped",
    stderr: "piped",
    env,
  });
}

function runTrain(args: string[], env: Record<string, string> = {}): { code: number; out: string } {
  const result = trainCommand(args, env).outputSync();
  const decoder = new TextDecoder();
  return { code: result.code, out: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
}

function modelTensors(path: string): Map<string, Uint8Array> {
  const { tensors } = loadCheckpoint(path);
  const out = new Map<string, Uint8Array>();
  for (const [name, t] of tensors) {
    if (name.startsWith("model.") || name.startsWith("optimizer.") || name.startsWith("ibot.")) {
      out.set(name, t.toBytes());
    }
    t.dispose();
  }
  return out;
}

Deno.test("train options: errors name the option and the allowed values", () => {
  assertThrows(() => parseTrainOptions(["--precision", "fp8"]), OptionError, ["--precision", "fp32", "bf16", "fp16"]);
  assertThrows(() => parseTrainOptions(["--lr", "fast"]), OptionError, ["--lr", "expected a number"]);
  assertThrows(() => parseTrainOptions(["--batch-size", "0"]), OptionError, ["--batch-size"]);
  assertThrows(() => parseTrainOptions(["--betas", "0.9"]), OptionError, ["--betas"]);
  assertThrows(() => parseTrainOptions(["--no-such-flag"]), OptionError, ["no-such-flag"]);
  assertThrows(() => parseTrainOptions(["--device", "tpu"]), OptionError, ["--device", "cuda"]);
  assertThrows(() => parseTrainOptions(["--train-num-samples", "100"]), OptionError, [
    "--train-num-samples",
    "webdataset",
  ]);
  assertThrows(() => parseTrainOptions(["--dataset-resampled"]), OptionError, ["--dataset-resampled", "webdataset"]);
  const options = parseTrainOptions([
    "--betas",
    "0.8",
    "0.9",
    "--clip_loss_weight",
    "2",
    "--ibot-cls-loss-weight",
    "0",
  ]);
  assertEquals(options.betas, [0.8, 0.9]);
  assertEquals([options.clipLossWeight, options.ibotClsLossWeight], [2, 0]);
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${dir}/c.json`, JSON.stringify({ "lr": 0.01, "batch-size": 4, "epochs": 3 }));
  const fromFile = parseTrainOptions(["--config", `${dir}/c.json`, "--epochs", "5"]);
  assertEquals([fromFile.lr, fromFile.batchSize, fromFile.epochs], [0.01, 4, 5], "the file, then flags win");
  Deno.writeTextFileSync(`${dir}/bad.json`, JSON.stringify({ "learning-rate": 1 }));
  assertThrows(() => parseTrainOptions(["--config", `${dir}/bad.json`]), OptionError, ["learning-rate"]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("schedules: utils.cosine_scheduler and the EMA momentum cosine", () => {
  const s = { base: 5e-4, final: 1e-5, totalSteps: 100, warmupSteps: 10, warmupStart: 1e-6 };
  assertClose(cosineValue(s, 0), 1e-6, { atol: 1e-15 });
  assertClose(cosineValue(s, 9), 5e-4, { atol: 1e-15 }); // linspace includes its end: the last warmup step is the peak
  assertClose(cosineValue(s, 5), 1e-6 + (5e-4 - 1e-6) * 5 / 9, { atol: 1e-15 });
  assertClose(cosineValue(s, 10), 5e-4, { atol: 1e-15 });
  assertClose(cosineValue(s, 55), 1e-5 + 0.5 * (5e-4 - 1e-5) * (1 + Math.cos(Math.PI * 45 / 90)), { atol: 1e-15 });
  assertClose(emaMomentum(0.996, 0, 100), 0.996, { atol: 1e-15 });
  assertClose(emaMomentum(0.996, 50, 100), 0.998, { atol: 1e-12 });
  assertClose(emaMomentum(0.996, 100, 100), 1, { atol: 1e-15 });
});

Deno.test("a run killed with SIGKILL and resumed with --resume auto ends bitwise equal to an uninterrupted one", async () => {
  const straight = Deno.makeTempDirSync();
  const first = runTrain([...SMALL, "--output-dir", straight]);
  assertEquals(first.code, 0, first.out);

  const killed = Deno.makeTempDirSync();
  const child = trainCommand([...SMALL, "--output-dir", killed]).spawn();
  // Kill after the first checkpoint exists, at a step that varies from run to run.
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const names = [...Deno.readDirSync(killed)].map((e) => e.name);
    if (names.some((n) => /^checkpoint-\d+\.safetensors$/.test(n))) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 400)));
  child.kill("SIGKILL");
  const status = await child.status;
  await child.stdout.cancel();
  await child.stderr.cancel();
  const finishedAnyway = [...Deno.readDirSync(killed)].some((e) => e.name === "checkpoint-00000012.safetensors");
  assert(!status.success || finishedAnyway, "the child was killed");

  const resumed = runTrain([...SMALL, "--output-dir", killed, "--resume", "auto"]);
  assertEquals(resumed.code, 0, resumed.out);
  if (!finishedAnyway) assert(/resume: .* at step \d+/.test(resumed.out), `resume line missing:\n${resumed.out}`);

  const expected = modelTensors(`${straight}/checkpoint-00000012.safetensors`);
  const actual = modelTensors(`${killed}/checkpoint-00000012.safetensors`);
  assertEquals(actual.size, expected.size, "tensor count");
  for (const [name, bytes] of expected) {
    const got = actual.get(name);
    assert(got !== undefined && got.length === bytes.length, `${name} missing or resized`);
    assert(got.every((b, i) => b === bytes[i]), `${name} differs after resume`);
  }
  Deno.removeSync(straight, { recursive: true });
  Deno.removeSync(killed, { recursive: true });
});

Deno.test("--resume auto reports a corrupted newest checkpoint and resumes from the previous one", () => {
  const dir = Deno.makeTempDirSync();
  const run = runTrain([...SMALL, "--max-steps", "6", "--output-dir", dir]);
  assertEquals(run.code, 0, run.out);
  const newest = `${dir}/checkpoint-00000006.safetensors`;
  const bytes = Deno.readFileSync(newest);
  bytes[bytes.length - 100] ^= 0xff;
  Deno.writeFileSync(newest, bytes);
  const resumed = runTrain([...SMALL, "--max-steps", "9", "--output-dir", dir, "--resume", "auto"]);
  assertEquals(resumed.code, 0, resumed.out);
  assert(resumed.out.includes("skipping") && resumed.out.includes("checkpoint-00000006"), resumed.out);
  assert(resumed.out.includes("at step 3"), `must resume from step 3:\n${resumed.out}`);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("an injected NaN stops the run naming the step and the term; earlier checkpoints stay good", () => {
  const dir = Deno.makeTempDirSync();
  const run = runTrain([...SMALL, "--output-dir", dir, "--test-hook-inject-nan", "4:ibot_cls_loss"]);
  assertEquals(run.code, 3, run.out);
  assert(run.out.includes("non-finite loss at step 4") && run.out.includes("ibot_cls_loss"), run.out);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.startsWith("checkpoint-")).sort();
  assertEquals(names, ["checkpoint-00000003.safetensors"], "no checkpoint after the NaN");
  const { tensors, step, meta } = loadCheckpoint(`${dir}/${names[0]}`);
  assertEquals(step, 3);
  const saved = meta.options as Record<string, unknown>;
  assertEquals(saved.testHookInjectNan, undefined, "a test hook is not part of the run a checkpoint records");
  assertEquals(saved.batchSize, 8);
  for (const t of tensors.values()) t.dispose();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("the plain CLIP model trains with the same loop (CLIP loss only)", () => {
  const dir = Deno.makeTempDirSync();
  const run = runTrain([...SMALL, "--model", "CLIP_tiny_synthetic", "--max-steps", "6", "--output-dir", dir]);
  assertEquals(run.code, 0, run.out);
  const summary = JSON.parse(Deno.readTextFileSync(`${dir}/summary.json`));
  assertEquals([summary.model, summary.steps], ["CLIP_tiny_synthetic", 6]);
  assert(Number.isFinite(summary.loss_first) && Number.isFinite(summary.loss_last), JSON.stringify(summary));
  const { tensors, meta } = loadCheckpoint(`${dir}/checkpoint-00000006.safetensors`);
  assert(![...tensors.keys()].some((k) => k.includes("visual_ema") || k.startsWith("ibot.")), "no teacher state");
  assertEquals((meta.model_config as { kind: string }).kind, "clip");
  for (const t of tensors.values()) t.dispose();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("the test hooks are hidden flags: --help does not list them, and they are validated like any option", () => {
  const help = runTrain(["--help"]);
  assertEquals(help.code, 0, help.out);
  assert(help.out.includes("--max-steps") && !help.out.includes("test-hook"), help.out);
  const dir = Deno.makeTempDirSync();
  try {
    const bad = runTrain(["--test-hook-inject-nan", "soon", "--output-dir", dir]);
    assertEquals(bad.code, 2, bad.out);
    assert(bad.out.includes("--test-hook-inject-nan") && bad.out.includes("STEP:TERM"), bad.out);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
