// cli_errors_test.ts: every failure a user can cause ends in one line on stderr, `detailclip <command>: <what>`, no
// "Uncaught", no stack, and the exit status of docs/errors.md. Each case of the error-message issue runs the real CLI
// in a child process (bounded by a timeout, so a FIFO that blocked would fail the test rather than hang it).
import { describeFailure, EXIT } from "../cli/errors.ts";
import { encodePng } from "../src/formats/png.ts";
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { cudaDeviceCount, cudaIsAvailable } from "../src/torch/mod.ts";
import { loadCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { assert, assertEquals } from "./helpers.ts";

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const decoder = new TextDecoder();
/** The quick-run options: one step of the tiny model on 16 synthetic images, no evaluation. */
const QUICK = ["--max-steps", "1", "--synthetic-size", "16", "--batch-size", "8", "--eval-size", "0"];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `detailclip <args>` (the CLI from source) with a time bound; stdout may go to a path such as /dev/full. */
async function cli(args: string[], options: { env?: Record<string, string>; stdoutTo?: string } = {}): Promise<Result> {
  const command = options.stdoutTo
    ? new Deno.Command("sh", {
      args: ["-c", `exec "$0" "$@" > "${options.stdoutTo}"`, Deno.execPath(), ...denoArgs(args)],
      env: { NO_COLOR: "1", ...options.env },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    })
    : new Deno.Command(Deno.execPath(), {
      args: denoArgs(args),
      env: { NO_COLOR: "1", ...options.env },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    });
  const out = await command.output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function denoArgs(args: string[]): string[] {
  return ["run", "--allow-all", "--unstable-ffi", MAIN, ...args];
}

/** Exactly one stderr line, with the command's prefix and each fragment, no trace; and the documented status. */
function assertOneLine(result: Result, command: string, status: number, fragments: string[]): string {
  const lines = result.stderr.split("\n").filter((line) => line.trim() !== "");
  const shown = `status ${result.code}, stderr:\n${result.stderr}`;
  assertEquals(lines.length, 1, `one stderr line; ${shown}`);
  const line = lines[0];
  assert(line.startsWith(`detailclip ${command}: `) || line.startsWith("detailclip: "), `prefix; ${shown}`);
  for (const marker of ["Uncaught", "    at ", "error: "]) assert(!line.includes(marker), `'${marker}' in ${shown}`);
  for (const fragment of fragments) assert(line.includes(fragment), `lacks ${JSON.stringify(fragment)}; ${shown}`);
  assertEquals(result.code, status, shown);
  return line;
}

function withDir(prefix: string, fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = Deno.makeTempDirSync({ prefix });
    try {
      await fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  };
}

function mkfifo(path: string): void {
  const made = new Deno.Command("mkfifo", { args: [path] }).outputSync();
  assert(made.success, `mkfifo ${path}: ${decoder.decode(made.stderr)}`);
}

// ---- usage and options: status 2 ---------------------------------------------------------------------------------

Deno.test("usage: option combinations and values that cannot work are refused up front (status 2)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc-cli-usage-" });
  try {
    const run = (extra: string[]) => cli(["train", ...QUICK, "--output-dir", `${dir}/run`, ...extra]);
    assertOneLine(await run(["--precision", "fp16"]), "train", EXIT.usage, ["--precision fp16", "CUDA", "bf16"]);
    assertOneLine(await run(["--model", "NoSuchModel"]), "train", EXIT.usage, ["--model", "unknown model", "tiny"]);
    assertOneLine(await run(["--seed", "1e30"]), "train", EXIT.usage, ["--seed", "2^53"]);
    assertOneLine(await run(["--threads", "100000"]), "train", EXIT.usage, ["--threads", "1024"]);
    assertOneLine(await run(["--workers", "100000"]), "train", EXIT.usage, ["--workers"]);
    assertOneLine(await run(["--batch-size", "0"]), "train", EXIT.usage, ["--batch-size"]);
    assertOneLine(await run(["--no-such-flag"]), "train", EXIT.usage, ["no-such-flag"]);
    // a device that is not there: the devices found are named (cuda:99 is missing on any machine)
    const missing = assertOneLine(await run(["--device", "cuda:99"]), "train", EXIT.usage, ["--device cuda:99"]);
    const count = cudaIsAvailable() ? cudaDeviceCount() : 0;
    assert(missing.includes(count === 0 ? "no CUDA device found" : `${count} CUDA device`), missing);
    assert(!Deno.statSync(dir).isFile && [...Deno.readDirSync(dir)].length === 0, "nothing was written");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "usage: --device cuda without a GPU says no CUDA device was found (status 2)",
  ignore: cudaIsAvailable(), // this machine has a CUDA device: the cuda:99 case above covers it
  fn: withDir("dc-cli-cuda-", async (dir) => {
    const result = await cli(["train", ...QUICK, "--device", "cuda", "--output-dir", `${dir}/run`]);
    assertOneLine(result, "train", EXIT.usage, ["--device cuda", "no CUDA device found", "--device cpu"]);
    const viz = await cli(["viz", "tokens", "--checkpoint", "x", "--image", "y", "--out", "z", "--device", "cuda"]);
    assertOneLine(viz, "viz", EXIT.usage, ["no CUDA device found"]);
  }),
});

Deno.test("usage: output folders that are files or under files, and bad configs (status 2)", async () => {
  await withDir("dc-cli-out-", async (dir) => {
    const file = `${dir}/a-file`;
    Deno.writeTextFileSync(file, "x");
    const train = (extra: string[]) => cli(["train", ...QUICK, ...extra]);
    assertOneLine(await train(["--output-dir", file]), "train", EXIT.usage, [`--output-dir ${file}`, "not a folder"]);
    assertOneLine(await train(["--output-dir", `${file}/sub`]), "train", EXIT.usage, [
      `${file}/sub`,
      "Not a directory",
    ]);
    Deno.writeTextFileSync(`${dir}/bad.json`, "{bad");
    assertOneLine(await train(["--config", `${dir}/bad.json`]), "train", EXIT.usage, ["--config", "bad.json", "JSON"]);
    assertOneLine(await train(["--config", "/dev/zero"]), "train", EXIT.usage, ["--config /dev/zero", "device"]);
    mkfifo(`${dir}/fifo`);
    assertOneLine(await train(["--config", `${dir}/fifo`]), "train", EXIT.usage, ["FIFO"]);
    Deno.writeTextFileSync(`${dir}/big.json`, `{"seed": 0${" ".repeat(2 * 1024 * 1024)}}`);
    assertOneLine(await train(["--config", `${dir}/big.json`]), "train", EXIT.usage, ["big.json", "cap"]);
  })();
});

Deno.test("usage: other commands' bad options are one line with status 2", async () => {
  assertOneLine(await cli(["nosuch"]), "", EXIT.usage, ["unknown command 'nosuch'", "train"]);
  assertOneLine(await cli(["data", "bpe", "--input", "x", "--vocab-size", "99999999999", "--out", "y"]), "data", 2, [
    "--vocab-size",
    "99999999999",
  ]);
  assertOneLine(await cli(["data", "nosuch"]), "data", EXIT.usage, ["unknown data tool"]);
  const scratch = Deno.makeTempDirSync({ prefix: "dc-cli-nolib-" });
  const noLibrary = await cli(["train", ...QUICK, "--output-dir", scratch], {
    env: { DETAILCLIP_LIB: "/nonexistent/lib.so" },
  });
  Deno.removeSync(scratch, { recursive: true });
  const line = assertOneLine(noLibrary, "train", EXIT.usage, ["native library not found", "`deno task build`"]);
  assert(!line.includes("detailclip: "), `one prefix: ${line}`);
  assertOneLine(await cli(["eval", "zeroshot", "--checkpoint", "c", "--device", "tpu"]), "eval", 2, [
    "--device",
    "tpu",
  ]);
  assertOneLine(await cli(["launch", "--", "--max-steps", "1"]), "launch", EXIT.usage, ["--nproc-per-node"]);
  assertOneLine(await cli(["export", "backbone", "--checkpoint", "c"]), "export", EXIT.usage, ["--out"]);
  assertOneLine(await cli(["viz", "tokens", "--checkpoint", "c"]), "viz", EXIT.usage, ["required"]);
  // sizes that would allocate or loop without end (found by the fuzz test)
  const context = await cli(["tokenize", "--bpe", "m.txt", "--context", "9007199254740991", "a cat"]);
  assertOneLine(context, "tokenize", EXIT.usage, ["--context", "65536"]);
  const size = await cli(["eval", "segprobe", "--checkpoint", "c", "--size", "9007199254740993"]);
  assertOneLine(size, "eval", EXIT.usage, ["--size", "1,000,000"]);
});

Deno.test("usage: output files that are folders or lie under a file are refused before any work (status 2)", async () => {
  await withDir("dc-cli-outfile-", async (dir) => {
    const file = `${dir}/a-file`;
    Deno.writeTextFileSync(file, "x");
    // the checkpoints do not exist: the output is checked first
    const exported = await cli(["export", "backbone", "--checkpoint", `${dir}/none`, "--out", dir]);
    assertOneLine(exported, "export", EXIT.usage, [`--out ${dir}`, "is a folder"]);
    const evaluated = await cli(["eval", "zeroshot", "--checkpoint", `${dir}/none`, "--out", `${file}/r.json`]);
    assertOneLine(evaluated, "eval", EXIT.usage, [`--out ${file}/r.json`, "not a folder"]);
    const plots = await cli(["eval", "zeroshot", "--checkpoint", `${dir}/none`, "--plots", file]);
    assertOneLine(plots, "eval", EXIT.usage, [`--plots ${file}`, "not a folder"]);
    const viz = await cli(["viz", "tokens", "--checkpoint", `${dir}/none`, "--image", file, "--out", `${file}/t.png`]);
    assertOneLine(viz, "viz", EXIT.usage, [`--out ${file}/t.png`]);
  })();
});

// ---- checkpoints: status 6 -------------------------------------------------------------------------------------

Deno.test("checkpoint: a truncated or hostile --resume, --checkpoint or FIFO is one line with status 6", async () => {
  await withDir("dc-cli-ckpt-", async (dir) => {
    const half = `${dir}/half.safetensors`;
    Deno.writeFileSync(half, new Uint8Array(1000).fill(0x41));
    const out = `${dir}/run`;
    assertOneLine(await cli(["train", ...QUICK, "--output-dir", out, "--resume", half]), "train", EXIT.checkpoint, [
      half,
      "header length",
    ]);
    mkfifo(`${dir}/fifo`);
    const fifo = `${dir}/fifo`;
    assertOneLine(await cli(["train", ...QUICK, "--output-dir", out, "--resume", fifo]), "train", 6, [fifo, "FIFO"]);
    assertOneLine(
      await cli(["export", "backbone", "--checkpoint", fifo, "--out", `${dir}/x.safetensors`]),
      "export",
      6,
      [
        "not a regular file",
      ],
    );
    assertOneLine(await cli(["eval", "zeroshot", "--checkpoint", half, "--size", "4"]), "eval", 6, [half]);
    assertOneLine(
      await cli(["viz", "tokens", "--checkpoint", fifo, "--image", half, "--out", `${dir}/p.png`]),
      "viz",
      6,
      [
        fifo,
      ],
    );
  })();
});

// ---- data: status 5 ----------------------------------------------------------------------------------------------

Deno.test("data: unusable data sets end with one line and status 5", async () => {
  await withDir("dc-cli-data-", async (dir) => {
    const merges = `${dir}/merges.txt`;
    writeMerges(merges, trainBpe(["a red square", "a blue circle", "two green triangles"], 530));
    // every image of the manifest is broken: no usable image for a batch
    const rows = ["filepath,title"];
    for (let i = 0; i < 12; i++) {
      Deno.writeFileSync(`${dir}/img${i}.jpg`, new Uint8Array([0xff, 0xd8, 0xff, 0x00, i]));
      rows.push(`img${i}.jpg,a red square ${i}`);
    }
    Deno.writeTextFileSync(`${dir}/bad.csv`, rows.join("\n") + "\n");
    // each case into a folder of its own: a failed run's metrics.jsonl makes its folder an earlier run's
    const csv = ["train", ...QUICK, "--dataset", "csv", "--metadata", `${dir}/bad.csv`];
    assertOneLine(await cli([...csv, "--bpe", merges, "--output-dir", `${dir}/run1`]), "train", EXIT.data, [
      "no usable",
    ]);
    assertOneLine(await cli([...csv, "--bpe", "/dev/zero", "--output-dir", `${dir}/run2`]), "train", EXIT.data, [
      "--bpe /dev/zero",
      "device",
    ]);
    const shards = ["--dataset", "webdataset", "--metadata", `${dir}/s-{0..999999999}.tar`, "--bpe", merges];
    assertOneLine(await cli(["train", ...QUICK, ...shards, "--output-dir", `${dir}/run3`]), "train", EXIT.data, [
      "1,000,000 names",
    ]);
    // a hostile pickle that declares a 2^60-byte string: refused from the file's size, nothing allocated
    const pickle = new Uint8Array([0x80, 0x04, 0x8d, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x2e]);
    Deno.writeFileSync(`${dir}/hostile.pkl`, pickle);
    const yfcc = await cli([
      "data",
      "yfcc-to-csv",
      "--metadata",
      `${dir}/hostile.pkl`,
      "--root",
      dir,
      "--out",
      `${dir}/y.csv`,
    ]);
    assertOneLine(yfcc, "data", EXIT.data, ["pickle"]);
  })();
});

// ---- I/O: status 7 -----------------------------------------------------------------------------------------------

Deno.test("io: a full stdout stops the run with one line naming it; a device as metrics.jsonl is refused (7)", async () => {
  await withDir("dc-cli-full-", async (dir) => {
    const full = await cli(["train", ...QUICK, "--output-dir", `${dir}/a`], { stdoutTo: "/dev/full" });
    assertOneLine(full, "train", EXIT.io, ["stdout", "No space left on device", "--resume auto"]);
    Deno.mkdirSync(`${dir}/b`);
    Deno.symlinkSync("/dev/full", `${dir}/b/metrics.jsonl`); // read to its end on resume, it would never end
    // (a fresh run would refuse the folder as an earlier run's; continuing it reaches the device)
    const metrics = await cli(["train", ...QUICK, "--output-dir", `${dir}/b`, "--resume", "auto"]);
    assertOneLine(metrics, "train", EXIT.io, [`${dir}/b/metrics.jsonl`, "not a regular file"]);
  })();
});

/** Why this machine cannot mount a small tmpfs in a user and mount namespace of its own; "" when it can. */
function tmpfsUnavailable(): string {
  try {
    const probe = new Deno.Command("unshare", {
      args: ["-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1M tmpfs $d && umount $d && rmdir $d"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return probe.success ? "" : "unshare -rm cannot mount a tmpfs here (no user namespaces)";
  } catch {
    return "no unshare(1) on this machine";
  }
}

const TMPFS_MISSING = tmpfsUnavailable();
if (TMPFS_MISSING !== "") console.error(`cli_errors_test: the full-disk test is skipped: ${TMPFS_MISSING}`);

Deno.test({
  name: "io: a disk that fills while a checkpoint is written stops with one line; the last one resumes (status 7)",
  ignore: TMPFS_MISSING !== "", // reason in TMPFS_MISSING, printed below
  fn: withDir("dc-cli-enospc-", async (dir) => {
    // In a private mount namespace: an 8 MB tmpfs holds the first 5.7 MB checkpoint but not the second. The run
    // stops; the tmpfs grows ("space is back"); --resume auto continues from checkpoint 1 to the end. Export, viz and
    // a new run's metrics.jsonl then write into a full tmpfs. Everything is copied out before the namespace goes.
    const image = `${dir}/image.png`;
    Deno.writeFileSync(image, encodePng(64, 64, new Uint8Array(64 * 64 * 3).fill(128)));
    const deno = [Deno.execPath(), ...denoArgs([])].map((a) => `'${a}'`).join(" ");
    const train = `${deno} train ${QUICK.join(" ").replace("--max-steps 1", "--max-steps 2")} --save-freq 1`;
    const script = [
      "set -u",
      `m=${dir}/mnt; mkdir -p $m && mount -t tmpfs -o size=8M tmpfs $m`,
      `${train} --output-dir $m/run > ${dir}/first.out 2> ${dir}/first.err; echo $? > ${dir}/first.code`,
      `cp -a $m/run ${dir}/after-failure`,
      "mount -o remount,size=64M $m",
      `${train} --output-dir $m/run --resume auto > ${dir}/resume.out 2> ${dir}/resume.err; echo $? > ${dir}/resume.code`,
      `cp -a $m/run ${dir}/after-resume`,
      // fill the tmpfs, then write an export and a picture into it
      "mount -o remount,size=16M $m && rm -f $m/run/metrics.jsonl",
      `dd if=/dev/zero of=$m/filler bs=1M count=64 2> /dev/null; true`,
      `${deno} export backbone --checkpoint ${dir}/after-resume/checkpoint-00000002.safetensors --out $m/b.safetensors` +
      ` > /dev/null 2> ${dir}/export.err; echo $? > ${dir}/export.code`,
      `${deno} viz tokens --checkpoint ${dir}/after-resume/checkpoint-00000002.safetensors --image ${image}` +
      ` --out $m/tokens.png > /dev/null 2> ${dir}/viz.err; echo $? > ${dir}/viz.code`,
      // a new run on the full disk: its first write (the output folder's lock record) cannot be made
      `${train} --output-dir $m/run2 > /dev/null 2> ${dir}/metrics.err; echo $? > ${dir}/metrics.code`,
      // a read-only file system: the output folder cannot be created, refused before any work
      `mkdir -p ${dir}/ro && mount -t tmpfs -o ro,size=1M tmpfs ${dir}/ro`,
      `${train} --output-dir ${dir}/ro/run > /dev/null 2> ${dir}/readonly.err; echo $? > ${dir}/readonly.code`,
    ].join("\n");
    const run = await new Deno.Command("unshare", {
      args: ["-rm", "sh", "-c", script],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(240_000),
    }).output();
    assert(run.success, `the namespace script failed: ${decoder.decode(run.stderr)}`);
    const read = (name: string): string => Deno.readTextFileSync(`${dir}/${name}`);
    const result = (name: string): Result => ({
      code: Number(read(`${name}.code`).trim()),
      stdout: "",
      stderr: read(`${name}.err`),
    });

    assertOneLine(result("first"), "train", EXIT.io, ["checkpoint-00000002.safetensors", "No space left", "--resume"]);
    const left = [...Deno.readDirSync(`${dir}/after-failure`)].map((e) => e.name).sort();
    assert(left.includes("checkpoint-00000001.safetensors"), `the first checkpoint is kept: ${left}`);
    assert(!left.some((name) => name.includes("checkpoint-00000002")), `no partial second checkpoint: ${left}`);
    const first = loadCheckpoint(`${dir}/after-failure/checkpoint-00000001.safetensors`); // verifies both digests
    assertEquals(first.step, 1);
    for (const t of first.tensors.values()) t.dispose();

    assertEquals(result("resume").code, 0, read("resume.err") + read("resume.out"));
    assert(read("resume.out").includes("checkpoint-00000001.safetensors at step 1"), read("resume.out"));
    const second = loadCheckpoint(`${dir}/after-resume/checkpoint-00000002.safetensors`);
    assertEquals(second.step, 2);
    for (const t of second.tensors.values()) t.dispose();

    assertOneLine(result("export"), "export", EXIT.io, ["b.safetensors", "No space left"]);
    assertOneLine(result("viz"), "viz", EXIT.io, ["tokens.png", "No space left"]);
    assertOneLine(result("metrics"), "train", EXIT.io, ["run2/detailclip.lock", "No space left"]);
    assertOneLine(result("readonly"), "train", EXIT.usage, [`--output-dir ${dir}/ro/run`, "Read-only file system"]);
  }),
});

// ---- the boundary itself -----------------------------------------------------------------------------------------

Deno.test("an unexpected error is one line with where it was thrown; DETAILCLIP_DEBUG=1 adds the full trace", () => {
  const previous = Deno.env.get("DETAILCLIP_DEBUG");
  try {
    Deno.env.delete("DETAILCLIP_DEBUG");
    const bug = new TypeError("x is undefined");
    const plain = describeFailure("train", bug);
    assertEquals(plain.status, EXIT.unexpected);
    assertEquals(plain.text.split("\n").length, 1, plain.text);
    for (const fragment of ["detailclip train: unexpected error: TypeError: x is undefined", "cli_errors_test.ts"]) {
      assert(plain.text.includes(fragment), plain.text);
    }
    assert(plain.text.includes("DETAILCLIP_DEBUG=1"), plain.text);
    Deno.env.set("DETAILCLIP_DEBUG", "1");
    const debug = describeFailure("train", new Error("outer", { cause: bug }));
    assert(debug.text.split("\n").length > 3, debug.text);
    assert(debug.text.includes("    at ") && debug.text.includes("caused by: TypeError"), debug.text);
    // a known error stays one line in the first line, and only gains the trace under DETAILCLIP_DEBUG
    Deno.env.delete("DETAILCLIP_DEBUG");
    const known = describeFailure("train", new Deno.errors.PermissionDenied("open '/x'"));
    assertEquals([known.status, known.text.split("\n").length], [EXIT.io, 1]);
  } finally {
    if (previous === undefined) Deno.env.delete("DETAILCLIP_DEBUG");
    else Deno.env.set("DETAILCLIP_DEBUG", previous);
  }
});
