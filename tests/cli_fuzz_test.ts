// cli_fuzz_test.ts: generated command lines against the CLI's error boundary. Each case is a command with some flags
// given hostile values (missing, negative, huge, not numbers, FIFOs, devices, directories, truncated and corrupted
// checkpoints, brace bombs, long strings). Every case must succeed, or fail with exactly one stderr line that starts
// with `detailclip`, carries no "Uncaught" and no stack, and a documented status other than 1 (1 means a bug: an
// error no table entry knows). The cases run in this process through cli/main.ts's `run` (milliseconds each; a few
// train for one step), and a sample of them again as real child processes, where "Uncaught" would show. Seeded:
// a failure names its case, and the same seed gives the same cases.
import { run } from "../cli/main.ts";
import { EXIT } from "../cli/errors.ts";
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { encodePng } from "../src/formats/png.ts";
import { numThreads, setNumThreads } from "../src/torch/mod.ts";
import { assert, assertEquals, rng } from "./helpers.ts";

/** How many in-process cases; docs/errors.md quotes this count (DETAILCLIP_FUZZ_CASES=n runs more, locally). */
const CASES = Number(Deno.env.get("DETAILCLIP_FUZZ_CASES") ?? 320);
/** How many of them run again as child processes. */
const CHILD_CASES = 12;
/** Another seed explores other cases (DETAILCLIP_FUZZ_SEED=n); CI runs the default. */
const SEED = Number(Deno.env.get("DETAILCLIP_FUZZ_SEED") ?? 20261206);

const QUICK = ["--epochs", "1", "--max-steps", "1", "--synthetic-size", "16", "--batch-size", "8", "--eval-size", "0"];

interface Fixtures {
  dir: string;
  checkpoint: string;
  truncated: string;
  flipped: string;
  fifo: string;
  merges: string;
  image: string;
  csv: string;
  labels: string;
}

function makeFixtures(dir: string, checkpoint: string): Fixtures {
  const bytes = Deno.readFileSync(checkpoint);
  const truncated = `${dir}/truncated.safetensors`, flipped = `${dir}/flipped.safetensors`;
  Deno.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
  const copy = bytes.slice();
  copy[copy.length - 100] ^= 0xff;
  Deno.writeFileSync(flipped, copy);
  const fifo = `${dir}/fifo`;
  assert(new Deno.Command("mkfifo", { args: [fifo] }).outputSync().success, "mkfifo");
  const merges = `${dir}/merges.txt`;
  writeMerges(merges, trainBpe(["a red square", "a blue circle", "two green triangles"], 540));
  const image = `${dir}/image.png`;
  Deno.writeFileSync(image, encodePng(32, 32, new Uint8Array(32 * 32 * 3).fill(90)));
  const csv = `${dir}/m.csv`;
  Deno.writeTextFileSync(csv, `filepath,title\nimage.png,"a red\nimage.png,a square\n${"x,".repeat(3)}\n`);
  const labels = `${dir}/labels.json`;
  Deno.writeTextFileSync(labels, '{"k": ["a", "b"]}');
  return { dir, checkpoint, truncated, flipped, fifo, merges, image, csv, labels };
}

/** Values a user (or an attacker) might give a flag. */
function hostileValues(f: Fixtures): string[] {
  return [
    "",
    "-1",
    "0",
    "1.5",
    "1e30",
    "1e308",
    "NaN",
    "Infinity",
    "abc",
    "--",
    "0x10",
    "9007199254740993",
    "é中🙂",
    "x".repeat(5000),
    "/dev/zero",
    "/dev/null",
    f.fifo,
    f.dir,
    `${f.dir}/missing/file`,
    f.truncated,
    f.flipped,
    f.checkpoint,
    f.merges,
    f.image,
    f.csv,
    f.labels,
    `${f.dir}/s-{0..999999999}.tar`,
    "{a,b}".repeat(30),
    "cuda",
    "cuda:7",
    "fp16",
    "bf16",
    "csv",
    "webdataset",
    "yfcc15m",
  ];
}

const TRAIN_FLAGS = [
  "--model",
  "--dataset",
  "--metadata",
  "--root",
  "--bpe",
  "--csv-separator",
  "--mask-ratio",
  "--momentum-ema",
  "--epochs",
  "--warmup-epochs",
  "--batch-size",
  "--lr",
  "--update-freq",
  "--wd",
  "--eps",
  "--precision",
  "--device",
  "--seed",
  "--resume",
  "--print-freq",
  "--save-freq",
  "--keep-last",
  "--workers",
  "--threads",
  "--max-steps",
  "--synthetic-size",
  "--synthetic-objects",
  "--config",
  "--dist-url",
  "--dist-timeout",
  "--no-such-flag",
];
const EVAL_FLAGS = ["--checkpoint", "--dataset", "--size", "--batch-size", "--device", "--labels", "--templates"]
  .concat(["--key", "--bpe", "--model", "--root", "--split", "--catalog", "--out", "--threads", "--bogus"]);

/** One generated command line. `out` is a fresh output folder for the case. */
function generate(next: () => number, f: Fixtures, out: string): string[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)];
  const values = hostileValues(f);
  const mutate = (flags: readonly string[], count: number): string[] => {
    const args: string[] = [];
    for (let i = 0; i < count; i++) {
      const flag = pick(flags);
      // Sizes stay small where a valid value would make real work (a huge batch would allocate gigabytes).
      const value = flag === "--batch-size" || flag === "--synthetic-size"
        ? pick(["0", "-3", "1.5", "abc", "", "1e30", "4"])
        : pick(values);
      args.push(flag, value);
    }
    return args;
  };
  const kind = next();
  if (kind < 0.3) return ["train", ...QUICK, "--output-dir", out, ...mutate(TRAIN_FLAGS, 1 + Math.floor(next() * 3))];
  if (kind < 0.5) {
    // scenarios that get past option parsing: file datasets, resumes, configs, with one or no hostile flag
    const scenario = pick([
      ["--dataset", "csv", "--metadata", pick([f.csv, ...values]), "--bpe", f.merges, "--root", f.dir],
      ["--dataset", pick(["webdataset", "coco", "yfcc15m", "redcaps"]), "--metadata", pick(values), "--bpe", f.merges],
      ["--resume", pick([f.truncated, f.flipped, f.checkpoint, f.fifo, "auto", ...values])],
      ["--config", pick([f.labels, f.csv, f.merges, ...values])],
      ["--precision", pick(["fp16", "bf16", "fp32"]), "--device", pick(["cpu", "cuda", "cuda:3"])],
    ]);
    return ["train", ...QUICK, "--output-dir", out, ...scenario, ...mutate(TRAIN_FLAGS, Math.floor(next() * 2))];
  }
  if (kind < 0.62) {
    const sub = pick(["zeroshot", "retrieval", "probe", "segprobe", "nope"]);
    const base = ["eval", sub, "--checkpoint", f.checkpoint, "--size", "8", "--train-size", "8"];
    if (next() < 0.5) return [...base, ...mutate(EVAL_FLAGS, 1 + Math.floor(next() * 2))];
    // file data sets of every kind, pointed at fixtures and hostile paths, with labels and templates
    const kinds = ["imagefolder", "csv", "webdataset", "filelist", "karpathy", "cifar10", "cifar100", "stl10", "mnist"];
    const dataset = `${pick(kinds)}:${pick([f.dir, f.csv, f.labels, f.fifo, f.image, ...values])}`;
    const prompts = next() < 0.5
      ? ["--labels", pick([f.labels, ...values]), "--templates", f.labels, "--key", "k"]
      : [];
    return [...base, "--dataset", dataset, "--train-dataset", dataset, ...prompts, ...mutate(EVAL_FLAGS, 1)];
  }
  if (kind < 0.7) {
    const out2 = pick([`${out}/b.safetensors`, `${out}/b.pt`, f.dir, "/dev/null/x", `${f.dir}/missing/x.safetensors`]);
    return ["export", pick(["backbone", "nope"]), "--checkpoint", pick(values.concat([f.checkpoint])), "--out", out2];
  }
  if (kind < 0.77) {
    return ["viz", "tokens", "--checkpoint", pick([f.checkpoint, ...values]), "--image", pick([f.image, ...values])]
      .concat(["--out", pick([`${out}/t.png`, f.dir, `${f.fifo}/x.png`]), ...mutate(["--mask-ratio", "--device"], 1)]);
  }
  if (kind < 0.83) {
    return ["tokenize", "--bpe", pick([f.merges, ...values]), ...mutate(["--context", "--truncation"], 1), "a cat"];
  }
  if (kind < 0.89) {
    const tool = pick(["bpe", "yfcc-to-csv", "nope"]);
    if (tool === "bpe") return ["data", "bpe", "--input", pick(values), "--vocab-size", pick(values), "--out", out];
    if (tool === "yfcc-to-csv") return ["data", tool, "--metadata", pick(values), "--root", f.dir, "--out", out];
    return ["data", tool, ...mutate(["--x"], 1)];
  }
  if (kind < 0.92) return ["golden", "--ref", pick(values), ...mutate(["--device", "--weights", "--out"], 1)];
  if (kind < 0.95) return ["info", ...mutate(["--model", "--bogus"], 1)];
  if (kind < 0.98) {
    // launch only with options it refuses: a valid one would start ranks
    return ["launch", ...mutate(["--nproc-per-node", "--nnodes", "--node-rank", "--master-port", "--grace"], 2)]
      .concat(pick([["--nproc-per-node", "0"], ["--bogus"], ["--nproc-per-node", "x"]]));
  }
  return [pick(["nope", "--version", "TRAIN", "-x", ""]), ...mutate(TRAIN_FLAGS, 1)];
}

interface Outcome {
  status: number;
  stderr: string;
}

/** Runs one case in this process, its stdout dropped and its stderr collected. */
async function runInProcess(args: string[]): Promise<Outcome> {
  const { log, error, info, warn } = console;
  let stderr = "";
  console.log = console.info = () => {};
  console.error = console.warn = (...parts: unknown[]) => (stderr += parts.map(String).join(" ") + "\n");
  try {
    return { status: await run(args), stderr };
  } finally {
    Object.assign(console, { log, error, info, warn });
  }
}

/** The failure of a case, or null when it holds: success, or one clean line with a documented status. */
function judge(args: string[], outcome: Outcome): string | null {
  const lines = outcome.stderr.split("\n").filter((line) => line.trim() !== "" && !line.includes(": warning: "));
  const shown = `case ${JSON.stringify(args.map((a) => (a.length > 60 ? a.slice(0, 60) + "…" : a)))}: status ` +
    `${outcome.status}, stderr:\n${outcome.stderr.slice(0, 2000)}`;
  if (outcome.status === 0) return null;
  if (outcome.status === EXIT.unexpected) return `an unexpected error (status 1): ${shown}`;
  if (lines.length !== 1) return `${lines.length} stderr lines: ${shown}`;
  if (!lines[0].startsWith("detailclip")) return `not a detailclip line: ${shown}`;
  for (const marker of ["Uncaught", "    at ", "error: "]) if (lines[0].includes(marker)) return `${marker}: ${shown}`;
  return null;
}

interface Report {
  cases: number;
  byStatus: Record<string, number>;
  failures: string[];
  /** The three slowest in-process cases, for keeping the test's time in check. */
  slowest: { seconds: number; args: string }[];
}

/**
 * The driver: runs when this file is started with `deno run` (the test below does so, in a child process with a time
 * limit, because a case that blocked the main thread, e.g. on a FIFO, could not be interrupted from inside). Writes
 * its Report as JSON to the path in its first argument.
 */
async function drive(reportPath: string): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "dc-cli-fuzz-" });
  Deno.chdir(dir); // a hostile value used as a relative output path (`--out 1e30`) lands here, not in the checkout
  const failures: string[] = [];
  const byStatus: Record<string, number> = {};
  const slowest: { seconds: number; args: string }[] = [];
  let count = 0;
  try {
    const trained = await runInProcess(["train", ...QUICK, "--output-dir", `${dir}/ckpt`]);
    if (trained.status !== 0) throw new Error(`the fixture checkpoint did not train: ${trained.stderr}`);
    const f = makeFixtures(dir, `${dir}/ckpt/checkpoint-00000001.safetensors`);
    const next = rng(SEED);
    const cases = Array.from({ length: CASES }, (_, i) => generate(next, f, `${dir}/out-${i}`));
    const threads = numThreads();
    for (const args of cases) {
      Deno.writeTextFileSync(`${reportPath}.current`, JSON.stringify(args)); // names the case if it hangs
      const started = performance.now();
      const outcome = await runInProcess(args);
      slowest.push({ seconds: (performance.now() - started) / 1000, args: args.join(" ").slice(0, 200) });
      slowest.sort((a, b) => b.seconds - a.seconds).splice(3);
      setNumThreads(threads); // a case's --threads is process-wide: the next case starts as the first did
      count++;
      byStatus[outcome.status] = (byStatus[outcome.status] ?? 0) + 1;
      const failure = judge(args, outcome);
      if (failure !== null) failures.push(failure);
    }
    // The same boundary end to end: a sample again as child processes, where an escaped error would say "Uncaught".
    const main = new URL("../cli/main.ts", import.meta.url).pathname;
    for (let i = 0; i < CHILD_CASES; i++) {
      const args = cases[Math.floor(i * CASES / CHILD_CASES)].map((a) => a.replace("/out-", "/child-out-"));
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--unstable-ffi", main, ...args],
        cwd: dir,
        env: { NO_COLOR: "1" },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      const failure = judge(args, { status: output.code, stderr: new TextDecoder().decode(output.stderr) });
      if (failure !== null) failures.push(`child process: ${failure}`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
    const report: Report = { cases: count, byStatus, failures, slowest };
    Deno.writeTextFileSync(reportPath, JSON.stringify(report));
  }
}

if (import.meta.main) await drive(Deno.args[0]);

Deno.test(`cli fuzz: ${CASES} generated command lines, each succeeds or ends in one clean line`, async () => {
  const reportPath = Deno.makeTempFileSync({ prefix: "dc-cli-fuzz-", suffix: ".json" });
  try {
    const driver = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--unstable-ffi", new URL(import.meta.url).pathname, reportPath],
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(600_000), // about 40 s normally; a case that hangs ends the driver here
    }).output();
    const stderr = new TextDecoder().decode(driver.stderr);
    let current = "";
    try {
      current = Deno.readTextFileSync(`${reportPath}.current`);
    } catch { /* not started */ }
    assertEquals(
      driver.code,
      0,
      `the fuzz driver failed (or hung and was stopped) at case ${current}:\n${stderr.slice(-3000)}`,
    );
    const report = JSON.parse(Deno.readTextFileSync(reportPath)) as Report;
    const counts = Object.entries(report.byStatus).map(([status, n]) => `${status}: ${n}`).join(", ");
    console.log(`cli fuzz: ${report.cases} cases in process + ${CHILD_CASES} as child processes; statuses ${counts}`);
    for (const { seconds, args } of report.slowest) console.log(`  slowest: ${seconds.toFixed(1)} s: ${args}`);
    assertEquals(report.cases, CASES);
    assertEquals(
      report.failures.length,
      0,
      `${report.failures.length} failing cases:\n${report.failures.slice(0, 6).join("\n\n")}`,
    );
    assert(Object.keys(report.byStatus).length >= 5, `the cases reach several statuses: ${counts}`);
  } finally {
    for (const path of [reportPath, `${reportPath}.current`]) {
      try {
        Deno.removeSync(path);
      } catch { /* not written */ }
    }
  }
});
