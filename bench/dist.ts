// bench/dist.ts: data-parallel throughput on this machine. The same global batch is trained for N optimizer steps
// by one rank (batch 2b, T libtorch threads) and by two Gloo ranks on loopback (batch b each, T/2 threads each), side
// by side in one invocation, through the CLI exactly as a user runs it (`train` with torchrun variables). It reports
// images/s of each, the 2-rank/1-rank ratio, and the share of rank 0's step time spent in collectives (gradient
// all-reduce, feature gathers, center and metric reductions, waiting for the other rank included; the gather's
// backward all-reduce runs inside backward and is not counted). The two-rank run is made twice: with the gradient
// buckets all-reduced during backward (the default) and after it (--disable-grad-overlap).
// Usage: deno run -A --unstable-ffi bench/dist.ts [--steps N] [--batch B] [--threads T] [--model NAME] [--json]
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    steps: { type: "string", default: "40" },
    batch: { type: "string", default: "16" },
    threads: { type: "string", default: String(navigator.hardwareConcurrency) },
    model: { type: "string", default: "tiny_synthetic" },
    json: { type: "boolean", default: false },
  },
});
const steps = Number(values.steps), batch = Number(values.batch), threads = Number(values.threads);
const main = new URL("../cli/main.ts", import.meta.url).pathname;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

interface Result {
  ranks: number;
  perRankBatch: number;
  threadsPerRank: number;
  stepsPerSecond: number;
  imagesPerSecond: number;
  commShare: number | null;
  overlap: boolean;
}

async function run(world: number, overlap = true): Promise<Result> {
  const dir = Deno.makeTempDirSync({ prefix: "dc_bench_dist_" });
  const perRank = (2 * batch) / world;
  const threadsPerRank = Math.max(1, Math.floor(threads / world));
  const args = [
    "run",
    "--allow-all",
    "--unstable-ffi",
    main,
    "train",
    "--model",
    values.model!,
    "--synthetic-size",
    String(steps * 2 * batch),
    "--epochs",
    "1",
    "--batch-size",
    String(perRank),
    "--eval-size",
    "0",
    "--print-freq",
    String(steps),
    "--threads",
    String(threadsPerRank),
    "--output-dir",
    dir,
    ...(overlap ? [] : ["--disable-grad-overlap"]),
  ];
  const port = String(freePort());
  const children = Array.from({ length: world }, (_, rank) =>
    new Deno.Command(Deno.execPath(), {
      args,
      env: world > 1
        ? { RANK: String(rank), WORLD_SIZE: String(world), MASTER_ADDR: "127.0.0.1", MASTER_PORT: port }
        : {},
      stdout: "piped",
      stderr: "piped",
    }).output());
  const outputs = await Promise.all(children);
  Deno.removeSync(dir, { recursive: true });
  const text = outputs.map((o) => new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr));
  outputs.forEach((o, r) => {
    if (!o.success) throw new Error(`rank ${r} of ${world} failed:\n${text[r]}`);
  });
  const done = /done: \d+ steps in [\d.]+ s \(([\d.]+) steps\/s\)/.exec(text[0]);
  if (!done) throw new Error(`no summary line in:\n${text[0]}`);
  const comm = /communication: ([\d.]+) s of ([\d.]+) s/.exec(text[0]);
  const stepsPerSecond = Number(done[1]);
  return {
    ranks: world,
    perRankBatch: perRank,
    threadsPerRank,
    stepsPerSecond,
    imagesPerSecond: stepsPerSecond * 2 * batch,
    commShare: comm ? Number(comm[1]) / Number(comm[2]) : null,
    overlap,
  };
}

const one = await run(1);
const two = await run(2);
const after = await run(2, false);
if (values.json) {
  console.log(JSON.stringify({ model: values.model, steps, globalBatch: 2 * batch, threads, one, two, after }));
} else {
  console.log(`${values.model}, ${steps} steps of global batch ${2 * batch}, ${threads} threads in all (CPU, Gloo)`);
  console.log("ranks | gradient all-reduce | batch/rank | threads/rank | steps/s | images/s | collectives share");
  for (const r of [one, two, after]) {
    const when = r.ranks === 1 ? "-" : r.overlap ? "during backward" : "after backward";
    console.log(
      `${String(r.ranks).padStart(5)} | ${when.padEnd(19)} | ${String(r.perRankBatch).padStart(10)} | ${
        String(r.threadsPerRank).padStart(12)
      } | ${r.stepsPerSecond.toFixed(2).padStart(7)} | ${r.imagesPerSecond.toFixed(1).padStart(8)} | ${
        r.commShare === null ? "-" : `${(100 * r.commShare).toFixed(1)}%`
      }`,
    );
  }
  console.log(`2 ranks / 1 rank throughput: ${(two.imagesPerSecond / one.imagesPerSecond).toFixed(2)}x`);
  console.log(`overlap / after backward: ${(two.imagesPerSecond / after.imagesPerSecond).toFixed(2)}x`);
}
