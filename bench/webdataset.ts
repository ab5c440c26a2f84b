// bench/webdataset.ts: the streaming webdataset reader (src/data/webdataset_stream.ts) against the indexed one
// (src/data/webdataset.ts) in the same run, on generated shards with tiny PNGs. (1) samples/s over one epoch of 32
// shards: batches of decoded, augmented images and tokenized captions, as the training loop asks for them; (2)
// start-up: from nothing to the first batch on 1,000 shards of 1,000 samples (2 GB of tar, written here): the indexed
// reader walks every tar header of every shard first, the streaming one opens the shards its first batch needs.
// The shards were just written, so both read from a warm page cache: on a network file system each header read of the
// indexed reader is a round trip, so its start-up here is a lower bound.
// Usage: deno task bench:wds [--shards N] [--per-shard N] [--startup-shards N] [--startup-per-shard N] [--batch N]
//                            [--threads N] [--buffer N] [--json]
import { parseArgs } from "node:util";
import { trainBpe } from "../src/data/bpe_trainer.ts";
import { encodePng } from "../src/formats/png.ts";
import type { TrainSource } from "../src/data/sources.ts";
import { tarArchive } from "../src/data/tar_stream.ts";
import { ClipTokenizer } from "../src/data/tokenizer.ts";
import { webDatasetTrainSource } from "../src/data/webdataset.ts";
import { DEFAULT_SHUFFLE_BUFFER, streamingWebDatasetSource } from "../src/data/webdataset_stream.ts";
import { setNumThreads } from "../src/torch/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shards: { type: "string", default: "32" },
    "per-shard": { type: "string", default: "500" },
    "startup-shards": { type: "string", default: "1000" },
    "startup-per-shard": { type: "string", default: "1000" },
    batch: { type: "string", default: "64" },
    threads: { type: "string", default: "2" },
    buffer: { type: "string", default: String(DEFAULT_SHUFFLE_BUFFER) },
    json: { type: "boolean", default: false },
  },
});
const SHARDS = Number(values.shards), PER_SHARD = Number(values["per-shard"]);
const STARTUP_SHARDS = Number(values["startup-shards"]), STARTUP_PER_SHARD = Number(values["startup-per-shard"]);
const BATCH = Number(values.batch), THREADS = Number(values.threads), BUFFER = Number(values.buffer);
const IMAGE = 24, OUT = 32;
setNumThreads(1);

const enc = new TextEncoder();
const WORDS = ["red", "blue", "square", "circle", "large", "small", "on", "grass", "a", "photo", "of", "the"];
const caption = (i: number): string =>
  Array.from({ length: 6 }, (_, k) => WORDS[(i * 7 + k * 5) % WORDS.length]).join(" ");

function shardBytes(shard: number, perShard: number, size: number): Uint8Array {
  const members = [];
  for (let i = 0; i < perShard; i++) {
    const pixels = new Uint8Array(size * size * 3);
    for (let j = 0; j < pixels.length; j++) pixels[j] = (shard * 131 + i * 17 + j * 3) & 0xff;
    const key = `${String(shard).padStart(5, "0")}${String(i).padStart(4, "0")}`;
    members.push({ name: `${key}.png`, data: encodePng(size, size, pixels) });
    members.push({ name: `${key}.txt`, data: enc.encode(caption(i)) });
  }
  return tarArchive(members);
}

const tokenizer = new ClipTokenizer(trainBpe(Array.from({ length: 64 }, (_, i) => caption(i)), 600));
const common = { tokenizer, imageSize: OUT, views: 1 as const, threads: THREADS, seed: 0 };

function drain(source: TrainSource, batches: number): void {
  for (let i = 0; i < batches; i++) {
    const b = source.batch(0, i, BATCH, { rank: 0, world: 1 }, "cpu");
    b.u.dispose();
    b.v?.dispose();
    b.text.dispose();
  }
}

function seconds(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

const dir = Deno.makeTempDirSync({ prefix: "dc_bench_wds_" });
try {
  // ---- (1) throughput over one epoch of SHARDS shards -------------------------------------------------------------
  for (let s = 0; s < SHARDS; s++) {
    Deno.writeFileSync(`${dir}/t${String(s).padStart(5, "0")}.tar`, shardBytes(s, PER_SHARD, IMAGE));
  }
  const pattern = `${dir}/t{00000..${String(SHARDS - 1).padStart(5, "0")}}.tar`;
  const samples = SHARDS * PER_SHARD;
  const batches = Math.floor(samples / BATCH);
  const throughput = (make: () => TrainSource): { startup: number; total: number; rate: number } => {
    let source: TrainSource | null = null;
    const startup = seconds(() => (source = make()));
    const total = startup + seconds(() => drain(source!, batches));
    (source as TrainSource | null)?.close?.();
    return { startup, total, rate: (batches * BATCH) / total };
  };
  const indexed = throughput(() => webDatasetTrainSource({ ...common, shards: pattern }));
  const streamed = throughput(() =>
    streamingWebDatasetSource({
      ...common,
      shards: pattern,
      epochSize: samples,
      rank: 0,
      world: 1,
      bufferSize: BUFFER,
    })
  );

  // ---- (2) start-up on STARTUP_SHARDS shards of STARTUP_PER_SHARD samples -----------------------------------------
  const template = shardBytes(0, STARTUP_PER_SHARD, 8);
  for (let s = 0; s < STARTUP_SHARDS; s++) Deno.writeFileSync(`${dir}/s${String(s).padStart(5, "0")}.tar`, template);
  const big = `${dir}/s{00000..${String(STARTUP_SHARDS - 1).padStart(5, "0")}}.tar`;
  const firstBatch = (make: () => TrainSource): number => {
    let source: TrainSource | null = null;
    const t = seconds(() => {
      source = make();
      drain(source, 1);
    });
    (source as TrainSource | null)?.close?.();
    return t;
  };
  const streamStart = firstBatch(() =>
    streamingWebDatasetSource({
      ...common,
      shards: big,
      epochSize: STARTUP_SHARDS * STARTUP_PER_SHARD,
      rank: 0,
      world: 1,
      bufferSize: BUFFER,
    })
  );
  const indexStart = firstBatch(() => webDatasetTrainSource({ ...common, shards: big }));

  const result = {
    threads: THREADS,
    batch: BATCH,
    buffer: BUFFER,
    epoch: { shards: SHARDS, samples, image: IMAGE, out: OUT },
    indexed,
    streamed,
    startup: {
      shards: STARTUP_SHARDS,
      samples: STARTUP_SHARDS * STARTUP_PER_SHARD,
      indexed: indexStart,
      streamed: streamStart,
    },
  };
  if (values.json) {
    console.log(JSON.stringify(result));
  } else {
    const row = (name: string, r: { startup: number; total: number; rate: number }): string =>
      `  ${name.padEnd(10)} ${r.rate.toFixed(0).padStart(7)} samples/s  (start-up ${r.startup.toFixed(2)} s, epoch ${
        r.total.toFixed(2)
      } s)`;
    console.log(
      `one epoch of ${SHARDS} shards × ${PER_SHARD} samples (${IMAGE} px PNG -> ${OUT} px, batch ${BATCH}, ` +
        `${THREADS} decode threads, buffer ${BUFFER}):`,
    );
    console.log(row("indexed", indexed));
    console.log(row("streaming", streamed));
    console.log(`  ratio      ${(streamed.rate / indexed.rate).toFixed(2)}× (streaming / indexed)`);
    console.log(`start-up to the first batch, ${STARTUP_SHARDS} shards × ${STARTUP_PER_SHARD} samples:`);
    console.log(`  indexed    ${indexStart.toFixed(2)} s`);
    console.log(`  streaming  ${streamStart.toFixed(2)} s  (${(indexStart / streamStart).toFixed(0)}× faster)`);
  }
} finally {
  Deno.removeSync(dir, { recursive: true });
}
