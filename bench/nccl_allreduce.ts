// bench/nccl_allreduce.ts: a 2-process NCCL all-reduce through this library's process group (bench/device.sh runs
// it on a lent GPU). Started without RANK it starts itself twice with torchrun's variables, waits (bounded by
// --timeout), and prints rank 0's JSON line: whether the sums were right and the all-reduce's time, algorithm and bus
// bandwidth (nccl-tests' definitions) for --mb MiB of float32. Each rank takes GPU local_rank modulo the GPUs there.
// NCCL (>= 2.5) refuses two ranks on one GPU ("Duplicate GPU detected"): on a one-GPU machine that refusal is the
// expected answer, printed as {"refused": ...} with exit status 3, so the caller can tell it from a failure (1).
// Usage: deno run -A --unstable-ffi bench/nccl_allreduce.ts [--mb 64] [--iters 20] [--timeout 120]
import { parseArgs } from "node:util";
import { cudaDeviceCount, type Device, ProcessGroup, synchronize, Tensor, tidy } from "../src/torch/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mb: { type: "string", default: "64" },
    iters: { type: "string", default: "20" },
    timeout: { type: "string", default: "120" },
  },
});
const mebibytes = Number(values.mb), iters = Number(values.iters), timeoutSeconds = Number(values.timeout);
const WORLD = 2;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** One rank: all-reduce a buffer of (rank + 1)s, check every element is the sum, then time `iters` more. */
function rankMain(): void {
  const pg = ProcessGroup.fromEnv({ backend: "nccl", timeoutMs: timeoutSeconds * 1000 });
  const device = `cuda:${pg.localRank % cudaDeviceCount()}` as Device;
  const elements = (mebibytes * 1024 * 1024) / 4;
  const expected = (WORLD * (WORLD + 1)) / 2;
  const buffer = Tensor.full([elements], pg.rank + 1, { device }).keep();
  try {
    pg.allReduce_(buffer, "sum");
    const correct = tidy(() => buffer.sub(expected).abs().amax().item() === 0);
    for (let i = 0; i < 3; i++) pg.allReduce_(buffer, "sum"); // warm-up
    synchronize(device);
    const started = performance.now();
    for (let i = 0; i < iters; i++) pg.allReduce_(buffer, "sum");
    synchronize(device);
    const ms = (performance.now() - started) / iters;
    const algbw = (elements * 4) / (ms / 1000) / 1e9;
    if (pg.rank === 0) {
      console.log(JSON.stringify({
        impl: "nccl all-reduce",
        world: WORLD,
        gpus: cudaDeviceCount(),
        mib: mebibytes,
        correct,
        ms_per_all_reduce: Number(ms.toFixed(3)),
        algbw_gbps: Number(algbw.toFixed(2)),
        busbw_gbps: Number((algbw * 2 * (WORLD - 1) / WORLD).toFixed(2)),
      }));
    }
    if (!correct) Deno.exit(1);
  } finally {
    buffer.dispose();
    pg.destroy();
  }
}

async function launcherMain(): Promise<number> {
  const port = String(freePort());
  const self = new URL(import.meta.url).pathname;
  const children = Array.from({ length: WORLD }, (_, rank) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-all", "--unstable-ffi", self, ...Deno.args],
      env: {
        RANK: String(rank),
        LOCAL_RANK: String(rank),
        WORLD_SIZE: String(WORLD),
        LOCAL_WORLD_SIZE: String(WORLD),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: port,
        // NCCL's own warnings name a refusal (e.g. two ranks on one GPU) even where the exception text does not.
        NCCL_DEBUG: Deno.env.get("NCCL_DEBUG") ?? "WARN",
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn());
  const killer = setTimeout(() => children.forEach((c) => c.kill("SIGKILL")), (timeoutSeconds + 30) * 1000);
  const outputs = await Promise.all(children.map((c) => c.output()));
  clearTimeout(killer);
  const text = new TextDecoder();
  const stderr = outputs.map((o) => text.decode(o.stderr)).join("\n");
  const line = text.decode(outputs[0].stdout).split("\n").find((l) => l.startsWith("{"));
  if (outputs.every((o) => o.code === 0) && line !== undefined) {
    console.log(line);
    return 0;
  }
  const duplicate = /Duplicate GPU|both on CUDA device|[Dd]uplicated GPU/.exec(stderr);
  if (duplicate !== null && cudaDeviceCount() < WORLD) {
    console.log(JSON.stringify({
      impl: "nccl all-reduce",
      world: WORLD,
      gpus: cudaDeviceCount(),
      refused: "NCCL allows one rank per GPU; this machine has fewer GPUs than ranks",
    }));
    return 3;
  }
  console.error(`nccl_allreduce: ranks exited ${outputs.map((o) => o.code).join(", ")}:\n${stderr.slice(-4000)}`);
  return 1;
}

if (import.meta.main) {
  if (Deno.env.get("RANK") !== undefined) rankMain();
  else Deno.exit(await launcherMain());
}
