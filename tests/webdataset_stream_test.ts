// webdataset_stream_test.ts: the streaming webdataset reader (src/data/webdataset_stream.ts) on small generated shards
// (8×8 PNGs written with our encoder): ranks × workers read every sample exactly once per epoch, no shard is opened
// at start-up, pipe: URLs stream from a subprocess, resampling draws shards with replacement, bad members are counted
// skips, and a restored state continues exactly where the saved one was.
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { loadCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { OptionError, parseTrainOptions } from "../src/train/options.ts";
import { encodePng } from "../src/formats/png.ts";
import { ShardPlan, shardUrls } from "../src/data/shard_list.ts";
import { tarArchive, TarGroupReader, TarStreamReader } from "../src/data/tar_stream.ts";
import { FileByteSource, PipeByteSource } from "../src/data/tar_stream.ts";
import { ClipTokenizer } from "../src/data/tokenizer.ts";
import {
  type StreamingTrainSource,
  type StreamingWebDatasetOptions,
  streamingWebDatasetSource,
} from "../src/data/webdataset_stream.ts";
import { listTar } from "../src/data/webdataset.ts";
import { liveTensors } from "../src/torch/mod.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

const SHARDS = 8;
const PER_SHARD = 8;

function image(seed: number): Uint8Array {
  const pixels = new Uint8Array(8 * 8 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (seed * 37 + i * 11) & 0xff;
  return encodePng(8, 8, pixels);
}

/** SHARDS shards of PER_SHARD samples: key `s<shard>_<i>`, caption "shard <s> sample <i>". */
function makeShards(dir: string, shards = SHARDS, perShard = PER_SHARD): string[] {
  const enc = new TextEncoder();
  const paths: string[] = [];
  for (let s = 0; s < shards; s++) {
    const members = [];
    for (let i = 0; i < perShard; i++) {
      const key = `s${s}_${String(i).padStart(3, "0")}`;
      members.push({ name: `${key}.png`, data: image(s * 1000 + i) });
      members.push({ name: `${key}.txt`, data: enc.encode(`shard ${s} sample ${i}`) });
    }
    const path = `${dir}/${String(s).padStart(2, "0")}.tar`;
    Deno.writeFileSync(path, tarArchive(members));
    paths.push(path);
  }
  return paths;
}

let cachedTokenizer: ClipTokenizer | null = null;
function tokenizer(): ClipTokenizer {
  cachedTokenizer ??= new ClipTokenizer(trainBpe(["shard sample 0 1 2 3 4 5 6 7 8 9"], 520));
  return cachedTokenizer;
}

function source(
  shards: string | string[],
  extra: Partial<StreamingWebDatasetOptions> & { rank?: number; world?: number } = {},
): StreamingTrainSource {
  return streamingWebDatasetSource({
    shards,
    tokenizer: tokenizer(),
    imageSize: 8,
    views: 1,
    threads: 1,
    epochSize: SHARDS * PER_SHARD,
    rank: 0,
    world: 1,
    seed: 3,
    ...extra,
  });
}

/** Keys of `count` batches read in order from (epoch, start). */
function read(src: StreamingTrainSource, epoch: number, start: number, count: number, batchSize: number): string[][] {
  const out: string[][] = [];
  for (let i = start; i < start + count; i++) {
    const b = src.batch(epoch, i, batchSize, { rank: src.state().rank, world: src.state().world }, "cpu");
    b.u.dispose();
    b.v?.dispose();
    b.text.dispose();
    out.push(src.lastKeys());
  }
  return out;
}

function withDir(fn: (dir: string) => void): () => void {
  return () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_wds_test_" });
    const before = liveTensors();
    try {
      fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    assertEquals(liveTensors(), before, "live tensors");
  };
}

Deno.test(
  "wds stream: tar groups read front to back, truncation reported",
  withDir((dir) => {
    makeShards(dir, 1, 3);
    const reader = new TarGroupReader(new TarStreamReader(new FileByteSource(`${dir}/00.tar`)), (e) => e === "txt");
    const keys: string[] = [];
    for (let g = reader.next(); g !== null; g = reader.next()) {
      keys.push(`${g.key}:${[...g.members.keys()].join(",")}:${new TextDecoder().decode(g.members.get("txt")!.data!)}`);
      assertEquals(g.members.get("png")!.data, null, "images are skipped, not read");
    }
    reader.close();
    assertEquals(keys, [
      "s0_000:png,txt:shard 0 sample 0",
      "s0_001:png,txt:shard 0 sample 1",
      "s0_002:png,txt:shard 0 sample 2",
    ]);
    assertEquals(reader.ended, "end");
    const bytes = Deno.readFileSync(`${dir}/00.tar`);
    Deno.writeFileSync(`${dir}/cut.tar`, bytes.subarray(0, 512 * 5 + 100));
    const cut = new TarGroupReader(new TarStreamReader(new FileByteSource(`${dir}/cut.tar`)), () => true);
    let n = 0;
    while (cut.next() !== null) n++;
    cut.close();
    assertEquals([n, cut.ended], [1, "truncated"]);
  }),
);

Deno.test("wds stream: OpenCLIP's flag names", () => {
  const o = parseTrainOptions([
    ...["--dataset-type", "webdataset", "--train-data", "s/{0..3}.tar", "--train-num-samples", "100"],
    ...["--dataset-resampled", "--shuffle-buffer", "7"],
  ]);
  assertEquals(
    [o.dataset, o.metadata, o.trainNumSamples, o.datasetResampled, o.shuffleBuffer],
    ["webdataset", "s/{0..3}.tar", 100, true, 7],
  );
  const official = parseTrainOptions(["--dataset", "webdataset", "--metadata", "s/{0..3}.tar"]);
  assertEquals([official.dataset, official.trainNumSamples, official.datasetResampled], [
    "webdataset",
    undefined,
    false,
  ]);
  assertThrows(() => parseTrainOptions(["--train-num-samples", "0"]), OptionError, ["--train-num-samples"]);
});

Deno.test("wds stream: shard plans split each pass over all workers and resample with replacement", () => {
  const plan = new ShardPlan({ shards: 10, globalWorkers: 4, seed: 1, resampled: false });
  for (const pass of [0, 1]) {
    const seen: number[] = [];
    for (let g = 0; g < 4; g++) {
      for (let slot = 0; plan.shardAt(g, pass, slot) >= 0; slot++) seen.push(plan.shardAt(g, pass, slot));
    }
    assertEquals(
      [...seen].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      `pass ${pass} covers every shard once`,
    );
  }
  assertThrows(() => new ShardPlan({ shards: 3, globalWorkers: 4, seed: 0, resampled: false }), RangeError, [
    "3 shards",
  ]);
  const resampled = new ShardPlan({ shards: 8, globalWorkers: 1, seed: 1, resampled: true });
  const counts = new Array(8).fill(0);
  for (let d = 0; d < 8000; d++) counts[resampled.shardAt(0, 0, d)]++;
  for (const c of counts) assert(c > 850 && c < 1150, `uniform draws: ${counts}`);
  const first8 = Array.from({ length: 8 }, (_, d) => resampled.shardAt(0, 0, d));
  assert(new Set(first8).size < 8, `with replacement, 8 draws of 8 shards repeat one: ${first8}`);
  assertEquals(shardUrls("a/{0..2}.tar::pipe:cat b/{x,y}.tar", "/r"), [
    "/r/a/0.tar",
    "/r/a/1.tar",
    "/r/a/2.tar",
    "pipe:cat b/x.tar",
    "pipe:cat b/y.tar",
  ]);
});

Deno.test(
  "wds stream: 2 ranks × 2 workers read every sample exactly once per epoch",
  withDir((dir) => {
    makeShards(dir);
    const all = new Set<string>();
    for (let s = 0; s < SHARDS; s++) for (let i = 0; i < PER_SHARD; i++) all.add(`s${s}_${String(i).padStart(3, "0")}`);
    const epochs: string[][] = [[], []];
    for (const rank of [0, 1]) {
      const src = source(`${dir}/{00..07}.tar`, { rank, world: 2, workers: 2, bufferSize: 5 });
      try {
        // 64 samples / (batch 4 × 2 ranks) = 8 batches per rank per epoch
        for (const epoch of [0, 1]) {
          for (const keys of read(src, epoch, 0, 8, 4)) epochs[epoch].push(...keys.map((k) => k.split("#")[1]));
        }
        assertEquals(src.skipped(), {});
      } finally {
        src.close();
      }
    }
    for (const epoch of [0, 1]) {
      assertEquals(epochs[epoch].length, 64);
      assertEquals(new Set(epochs[epoch]).size, 64, `epoch ${epoch}: no sample twice`);
      assert(epochs[epoch].every((k) => all.has(k)), "only real samples");
    }
    assert(epochs[0].join() !== epochs[1].join(), "each epoch is shuffled afresh");
  }),
);

Deno.test(
  "wds stream: pipe: URLs stream from a subprocess, and nothing is opened before the first batch",
  withDir((dir) => {
    const paths = makeShards(dir);
    const log = `${dir}/opened.log`;
    Deno.writeTextFileSync(log, "");
    const urls = paths.map((p, s) => `pipe:echo ${s} >> ${log}; cat ${p}`);
    // 1,000 shard paths that do not exist: building the source touches none of them (the indexed reader would count
    // 1,000 shard_missing here).
    const absent = source(`${dir}/absent/{0000..0999}.tar`);
    assertEquals(absent.skipped(), {});
    absent.close();
    const src = source(urls, { bufferSize: 2 });
    try {
      assertEquals(Deno.readTextFileSync(log), "", "no shard is read at start-up");
      const first = read(src, 0, 0, 1, 2)[0];
      // Batch 0 and the prefetched batch 1 take 5 samples (buffer 2), all from the first shard.
      assertEquals(Deno.readTextFileSync(log).trim().split("\n").length, 1, "one shard opened for the first batches");
      const rest = read(src, 0, 1, 31, 2).flat();
      const keys = [...first, ...rest].map((k) => k.split("#")[1]);
      assertEquals(new Set(keys).size, 64, "every sample of the 8 piped shards, once");
      assertEquals(src.skipped(), {});
      // The same shards as files give the same samples in the same order (same seed, same shard order).
      const files = source(paths, { bufferSize: 2 });
      try {
        const fromFiles = read(files, 0, 0, 32, 2).flat().map((k) => k.split("#")[1]);
        assertEquals(fromFiles, keys);
      } finally {
        files.close();
      }
    } finally {
      src.close();
    }
  }),
);

Deno.test(
  "wds stream: a restored state continues exactly (files, pipes, resampled)",
  withDir((dir) => {
    const paths = makeShards(dir);
    const variants: [string, string | string[], Partial<StreamingWebDatasetOptions>][] = [
      ["files, 2 workers", `${dir}/{00..07}.tar`, { workers: 2, bufferSize: 6 }],
      ["pipes", paths.map((p) => `pipe:cat ${p}`), { bufferSize: 6 }],
      ["resampled", `${dir}/{00..07}.tar`, { resampled: true, bufferSize: 6, workers: 2 }],
    ];
    for (const [name, shards, extra] of variants) {
      const straight = source(shards, extra);
      const resumed = source(shards, extra);
      try {
        const expected = read(straight, 0, 0, 24, 4);
        read(resumed, 0, 0, 9, 4);
        const saved = JSON.parse(JSON.stringify(resumed.state()));
        resumed.close();
        const again = source(shards, extra);
        again.restore(saved);
        const tail = read(again, Math.floor(9 / 16), 9 % 16, 24 - 9, 4);
        assertEquals(tail, expected.slice(9), `${name}: the batches after the restored state`);
        again.close();
      } finally {
        straight.close();
      }
    }
    const other = source(`${dir}/{00..06}.tar`);
    try {
      const saved = source(`${dir}/{00..07}.tar`);
      const state = saved.state();
      saved.close();
      assertThrows(() => other.restore(state), Error, ["shards 8 (now 7)"]);
    } finally {
      other.close();
    }
  }),
);

Deno.test(
  "wds stream: resampled draws shards with replacement",
  withDir((dir) => {
    makeShards(dir);
    const src = source(`${dir}/{00..07}.tar`, { resampled: true, bufferSize: 1 });
    try {
      // Buffer 1: samples come in stream order, so the shard sequence is visible: 8 shards' worth of batches.
      const keys = read(src, 0, 0, 16, 4).flat().map((k) => k.split("#")[1]);
      const shardsRead: string[] = [];
      for (const k of keys) {
        const shard = k.split("_")[0];
        if (shardsRead.at(-1) !== shard) shardsRead.push(shard);
      }
      assertEquals(keys.length, 64);
      assert(new Set(keys).size < 64, "some sample is drawn twice within 64 draws");
      assert(new Set(shardsRead).size < shardsRead.length, `a shard drawn twice among ${shardsRead}`);
    } finally {
      src.close();
    }
  }),
);

Deno.test(
  "wds stream: bad members are counted skips and batches stay full",
  withDir((dir) => {
    const enc = new TextEncoder();
    const good = (k: string) => [
      { name: `${k}.png`, data: image(k.length) },
      { name: `${k}.txt`, data: enc.encode(`caption ${k}`) },
    ];
    Deno.writeFileSync(
      `${dir}/a.tar`,
      tarArchive([
        ...good("a0"),
        { name: "a1.png", data: enc.encode("not a png") }, // image_* skip in the workers
        { name: "a1.txt", data: enc.encode("broken image") },
        { name: "a2.png", data: image(2) }, // tar_no_caption
        { name: "a3.txt", data: enc.encode("no image") }, // tar_no_image
        { name: "a4.png", data: image(4) },
        { name: "a4.txt", data: enc.encode("  ") }, // caption_empty
        ...good("a5"),
        ...good("a6"),
      ]),
    );
    const full = tarArchive([...good("b0"), ...good("b1"), ...good("b2")]);
    // Cut inside b2's last members: b0 and b1 stay, b2 is lost (tar_truncated, and tar_no_caption if its image is whole).
    Deno.writeFileSync(`${dir}/b.tar`, full.subarray(0, full.length - 1024 - 1024 - 400));
    const src = source([`${dir}/a.tar`, `${dir}/b.tar`, `${dir}/missing.tar`], { bufferSize: 3, epochSize: 4 });
    try {
      const keys = read(src, 0, 0, 2, 3).flat().map((k) => k.split("#")[1]);
      assertEquals(keys.length, 6);
      assert(keys.every((k) => ["a0", "a5", "a6", "b0", "b1"].includes(k)), `only good samples: ${keys}`);
      const skipped = src.skipped();
      // Counted once per pass over a shard (the refills may have started a second pass).
      for (const reason of ["tar_no_caption", "tar_no_image", "caption_empty", "tar_truncated", "shard_missing"]) {
        assert(skipped[reason] >= 1, `${reason} not counted: ${JSON.stringify(skipped)}`);
      }
      assert(
        Object.keys(skipped).some((r) => r.startsWith("image_")),
        `the broken image is counted: ${JSON.stringify(skipped)}`,
      );
    } finally {
      src.close();
    }
  }),
);

// ---- the training CLI: 2 ranks (torchrun variables) × 2 workers ---------------------------------------------------

const main = new URL("../cli/main.ts", import.meta.url).pathname;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function rankProcesses(args: string[], log: string): Deno.ChildProcess[] {
  const port = String(freePort());
  return [0, 1].map((rank) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--unstable-ffi", main, "train", ...args, "--test-hook-sample-log", log],
      env: { RANK: String(rank), WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: port },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn()
  );
}

async function runRanks(args: string[], log: string): Promise<string> {
  const results = await Promise.all(rankProcesses(args, log).map((c) => c.output()));
  const out = results.map((r) => new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr)).join("\n");
  for (const r of results) assertEquals(r.code, 0, out);
  return out;
}

/** batch number → sample keys, per rank, from the --test-hook-sample-log files (a later line for a batch wins). */
function sampleLog(prefix: string): Map<number, string[]>[] {
  return [0, 1].map((rank) => {
    const out = new Map<number, string[]>();
    for (const line of Deno.readTextFileSync(`${prefix}.rank${rank}`).trim().split("\n")) {
      const { batch, keys } = JSON.parse(line) as { batch: number; keys: string[] };
      out.set(batch, keys.map((k) => k.split("#")[1]));
    }
    return out;
  });
}

function trainedBytes(path: string): Map<string, Uint8Array> {
  const { tensors } = loadCheckpoint(path);
  const out = new Map<string, Uint8Array>();
  for (const [name, t] of tensors) {
    if (/^(model|optimizer|ibot)\./.test(name)) out.set(name, t.toBytes());
    t.dispose();
  }
  return out;
}

Deno.test("wds stream train: 2 ranks × 2 workers read each sample once per epoch; SIGKILL + --resume auto is exact", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_wds_train_" });
  try {
    makeShards(dir);
    writeMerges(`${dir}/bpe.txt`, trainBpe(["shard sample 0 1 2 3 4 5 6 7 8 9"], 520));
    const args = (out: string) => [
      ...["--dataset-type", "webdataset", "--train-data", `${dir}/{00..07}.tar`, "--train-num-samples", "64"],
      ...["--bpe", `${dir}/bpe.txt`, "--model", "CLIP_tiny_synthetic", "--batch-size", "4", "--workers", "2"],
      ...["--shuffle-buffer", "5", "--epochs", "2", "--save-freq", "3", "--print-freq", "4", "--threads", "1"],
      ...["--keep-last", "10", "--output-dir", out],
    ];
    // 64 samples / (batch 4 × 2 ranks) = 8 steps an epoch, 16 in all.
    const straightOut = await runRanks(args(`${dir}/straight`), `${dir}/straight.log`);
    const straight = sampleLog(`${dir}/straight.log`);
    for (const epoch of [0, 1]) {
      const keys: string[] = [];
      for (const rank of [0, 1]) for (let n = epoch * 8; n < epoch * 8 + 8; n++) keys.push(...straight[rank].get(n)!);
      assertEquals([keys.length, new Set(keys).size], [64, 64], `epoch ${epoch}: every sample once\n${straightOut}`);
    }
    const { meta } = loadCheckpoint(`${dir}/straight/checkpoint-00000016.safetensors`);
    const dataState = meta.data_state as { rank: number; batch: number }[];
    assertEquals(dataState.map((s) => [s.rank, s.batch]), [[0, 16], [1, 16]], "each rank's stream state is saved");

    const killedDir = `${dir}/killed`;
    const children = rankProcesses(args(killedDir), `${dir}/killed.log`);
    const deadline = Date.now() + 120_000;
    const hasCheckpoint = (): boolean => {
      try {
        return [...Deno.readDirSync(killedDir)].some((e) => /^checkpoint-\d+\.safetensors$/.test(e.name));
      } catch {
        return false;
      }
    };
    while (Date.now() < deadline && !hasCheckpoint()) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 400)));
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* already done */ }
    }
    await Promise.all(children.map((c) => c.output()));
    const finishedAnyway = [...Deno.readDirSync(killedDir)].some((e) => e.name === "checkpoint-00000016.safetensors");
    const resumedOut = await runRanks([...args(killedDir), "--resume", "auto"], `${dir}/killed.log`);
    if (!finishedAnyway) assert(/resume: .* at step \d+/.test(resumedOut), `resume line missing:\n${resumedOut}`);

    const resumed = sampleLog(`${dir}/killed.log`);
    for (const rank of [0, 1]) {
      for (let n = 0; n < 16; n++) {
        assertEquals(resumed[rank].get(n), straight[rank].get(n), `rank ${rank} batch ${n} after the resume`);
      }
    }
    const expected = trainedBytes(`${dir}/straight/checkpoint-00000016.safetensors`);
    const actual = trainedBytes(`${killedDir}/checkpoint-00000016.safetensors`);
    assertEquals(actual.size, expected.size, "tensor count");
    for (const [name, bytes] of expected) {
      const got = actual.get(name);
      assert(got !== undefined && got.every((b, i) => b === bytes[i]), `${name} differs after the resume`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- the tar stream against Python's tarfile --------------------------------------------------------------------

const TARFILE_SCRIPT = `
import io, json, random, sys, tarfile
out = sys.argv[1]
rnd = random.Random(5)
listing = {}
for fmt_name, fmt in (("ustar", tarfile.USTAR_FORMAT), ("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for k in range(40):
            folder = "d" * (120 if fmt_name != "ustar" else 60) if k % 3 == 0 else "x"
            if fmt_name == "pax" and k % 5 == 0:
                folder = "caf\\u00e9"
            for ext in ("jpg", "txt"):
                size = rnd.choice([0, 1, 511, 512, 513, 1024, rnd.randrange(1, 5000)])
                info = tarfile.TarInfo(f"{folder}/{k:05d}.{ext}")
                info.size = size
                info.mtime = 0
                tf.addfile(info, io.BytesIO(bytes(rnd.randrange(256) for _ in range(size))))
            if k == 7:
                d = tarfile.TarInfo("somedir")
                d.type = tarfile.DIRTYPE
                tf.addfile(d)
    path = f"{out}/{fmt_name}.tar"
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    with tarfile.open(path) as tf:
        listing[fmt_name] = [[m.name, m.offset_data, m.size] for m in tf.getmembers() if m.isfile()]
print(json.dumps(listing))
`;

function pythonTars(dir: string): Record<string, [string, number, number][]> | null {
  try {
    const run = new Deno.Command("python3", { args: ["-c", TARFILE_SCRIPT, dir], stdout: "piped", stderr: "piped" })
      .outputSync();
    return run.success ? JSON.parse(new TextDecoder().decode(run.stdout)) : null;
  } catch {
    return null;
  }
}

function python3Missing(): boolean {
  try {
    return !new Deno.Command("python3", { args: ["-c", "import tarfile"] }).outputSync().success;
  } catch {
    return true;
  }
}

Deno.test({
  name: "wds stream: members, offsets and bytes equal Python's tarfile (ustar, GNU long names, pax), file and pipe",
  ignore: python3Missing(),
  fn: withDir((dir) => {
    const expected = pythonTars(dir);
    assert(expected !== null, "python3 tarfile script failed");
    for (const [format, members] of Object.entries(expected)) {
      const path = `${dir}/${format}.tar`;
      const bytes = Deno.readFileSync(path);
      for (const kind of ["file", "pipe"]) {
        const source = kind === "file" ? new FileByteSource(path) : new PipeByteSource(`cat ${path}`, dir, format);
        const reader = new TarStreamReader(source);
        const got: [string, number, number][] = [];
        for (let m = reader.next(); typeof m !== "string"; m = reader.next()) {
          got.push([m.name, m.offset, m.size]);
          // Every other member's data is read (the rest skipped): it must be the bytes at its offset.
          if (got.length % 2 === 0) {
            const data = reader.data()!;
            assert(data.every((b, i) => b === bytes[m.offset + i]), `${format} ${kind}: ${m.name} data`);
          }
        }
        reader.close();
        assertEquals(got, members, `${format} via ${kind}`);
      }
      const indexed = listTar(path).members.map((m) => [m.name, m.offset, m.size]);
      assertEquals(indexed, members, `${format}: the indexed reader's listing`);
      // Cut anywhere: the members before the cut, never an exception.
      for (const cut of [0, 100, 512, 513, 5000, Math.floor(bytes.length / 2), bytes.length - 1100]) {
        Deno.writeFileSync(`${dir}/cut.tar`, bytes.subarray(0, cut));
        const reader = new TarStreamReader(new FileByteSource(`${dir}/cut.tar`));
        const names: string[] = [];
        let end: string;
        for (let m = reader.next();; m = reader.next()) {
          if (typeof m === "string") {
            end = m;
            break;
          }
          names.push(m.name);
        }
        reader.close();
        const whole = members.filter(([, offset, size]) => offset + size <= cut).map(([name]) => name);
        assert(
          names.length >= whole.length && names.every((n, i) => n === members[i][0]),
          `${format} cut at ${cut}: ${names.length} members, ${whole.length} whole`,
        );
        assert(end === "truncated" || end === "end", `${format} cut at ${cut}: ended ${end}`);
      }
    }
  }),
});

Deno.test("wds stream train: pipe: shards, --dataset-resampled, stopped and resumed: the same batches and weights", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_wds_train_" });
  try {
    const paths = makeShards(dir);
    writeMerges(`${dir}/bpe.txt`, trainBpe(["shard sample 0 1 2 3 4 5 6 7 8 9"], 520));
    const args = (out: string, steps: number) => [
      ...["--dataset-type", "webdataset", "--train-data", paths.map((p) => `pipe:cat ${p}`).join("::")],
      ...[
        "--train-num-samples",
        "64",
        "--dataset-resampled",
        "--bpe",
        `${dir}/bpe.txt`,
        "--model",
        "CLIP_tiny_synthetic",
      ],
      ...["--batch-size", "4", "--shuffle-buffer", "6", "--epochs", "1", "--save-freq", "3", "--threads", "1"],
      ...["--max-steps", String(steps), "--output-dir", out],
    ];
    const run = async (extra: string[], log: string): Promise<string> => {
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--unstable-ffi", main, "train", ...extra, "--test-hook-sample-log", log],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      assertEquals(result.code, 0, out);
      return out;
    };
    await run(args(`${dir}/straight`, 6), `${dir}/straight.log`);
    await run(args(`${dir}/stopped`, 3), `${dir}/stopped.log`);
    const resumed = await run([...args(`${dir}/stopped`, 6), "--resume", "auto"], `${dir}/stopped.log`);
    assert(resumed.includes("at step 3"), resumed);
    const read = (path: string): string[] => Deno.readTextFileSync(`${path}.rank0`).trim().split("\n");
    const straight = read(`${dir}/straight.log`).map((l) => JSON.parse(l).keys.map((k: string) => k.split("#")[1]));
    const stopped = read(`${dir}/stopped.log`).map((l) => JSON.parse(l).keys.map((k: string) => k.split("#")[1]));
    assertEquals(stopped, straight, "the stopped and resumed run read the same batches");
    const expected = trainedBytes(`${dir}/straight/checkpoint-00000006.safetensors`);
    const actual = trainedBytes(`${dir}/stopped/checkpoint-00000006.safetensors`);
    assertEquals(actual.size, expected.size, "tensor count");
    for (const [name, bytes] of expected) {
      const got = actual.get(name);
      assert(got !== undefined && got.every((b, i) => b === bytes[i]), `${name} differs after the resume`);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
