// dist_overlap_test.ts: gradient all-reduce buckets launched during backward (dist.cpp's reducer,
// ProcessGroup.gradientReducer) against the all-reduce after backward (averageGradients), on two Gloo ranks: one
// DetailCLIP step with the gathered CLIP loss, the same step accumulated over two micro-batches, and the step with
// --grad-checkpointing. The averaged gradients must be bitwise equal (two ranks: each element is the same a + b), the
// first step must launch nothing early (it learns the gradient counts) and the later ones must overlap. A backward
// whose graph changed after that (more gradients per parameter) must stop with an error naming --disable-grad-overlap.
import { ProcessGroup } from "../src/torch/dist.ts";
import { assert, assertEquals } from "./helpers.ts";

const worker = new URL("./dist_overlap_worker.ts", import.meta.url).pathname;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test({
  name: "dist: bucket all-reduces started during backward average exactly as the all-reduce after it",
  ignore: !ProcessGroup.available("gloo") && Deno.env.get("DETAILCLIP_REQUIRE_GLOO") !== "1",
  fn: async () => {
    const port = String(freePort());
    const ranks = [0, 1].map((rank) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", "--unstable-ffi", worker],
        env: { RANK: String(rank), WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: port, OMP_NUM_THREADS: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output()
    );
    const results = await Promise.all(ranks);
    for (const [rank, result] of results.entries()) {
      const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      assertEquals(result.code, 0, `rank ${rank}: ${text}`);
      const got = JSON.parse(new TextDecoder().decode(result.stdout).trim().split("\n").at(-1)!);
      for (const name of ["plain", "accumulated", "checkpointed"]) {
        const { buckets, steps } = got[name] as { buckets: number; steps: { diff: number; overlapped: number }[] };
        assert(buckets > 5, `${name}: only ${buckets} buckets`);
        steps.forEach((s, i) =>
          assertEquals(s.diff, 0, `${name}, step ${i + 1}: gradients differ from averageGradients'`)
        );
        assertEquals(steps[0].overlapped, 0, `${name}: the first step learns the counts and launches nothing early`);
        for (const s of steps.slice(1)) {
          assert(
            s.overlapped > 0 && s.overlapped <= buckets,
            `${name}: ${s.overlapped} of ${buckets} buckets overlapped`,
          );
        }
      }
      assert(
        /after its bucket was all-reduced.*--disable-grad-overlap/.test(got.changed_graph),
        `a changed backward graph: ${got.changed_graph}`,
      );
    }
  },
});
