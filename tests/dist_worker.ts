// dist_worker.ts: one rank of the collective checks in dist_test.ts (not a test itself). Started twice with RANK,
// WORLD_SIZE, MASTER_ADDR and MASTER_PORT; prints one JSON line of results that the test compares with values it
// computes by hand. Rank r's inputs are simple functions of r, so the expected sums, maxima and gathers are obvious.
import { clipLoss } from "../src/losses/clip.ts";
import { ProcessGroup } from "../src/torch/dist.ts";
import { Tensor, tidy } from "../src/torch/mod.ts";

const pg = ProcessGroup.fromEnv({ timeoutMs: 30_000 });
const { rank, world } = pg;
const out: Record<string, unknown> = { rank, world };
const values = (t: Tensor): number[] => Array.from(t.toArray() as ArrayLike<number>);

tidy(() => {
  // all_reduce: rank r holds [r+1, 10(r+1), -(r+1)] (float32), and the same as int64.
  const base = [1, 10, -1].map((v) => v * (rank + 1));
  for (const op of ["sum", "avg", "max", "min"] as const) {
    out[`all_reduce_${op}`] = values(pg.allReduce_(Tensor.fromArray(new Float32Array(base), [3]), op));
  }
  out.all_reduce_sum_int64 = values(
    pg.allReduce_(Tensor.fromArray(new Float32Array(base), [3]).to({ dtype: "int64" })),
  );
  // A non-contiguous view is reduced through a dense buffer and written back in place.
  const matrix = Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6].map((v) => v * (rank + 1))), [2, 3]);
  pg.allReduce_(matrix.transpose(0, 1), "sum");
  out.all_reduce_transposed = values(matrix);
  out.all_reduce_bf16 = values(
    pg.allReduce_(Tensor.fromArray(new Float32Array(base), [3]).to({ dtype: "bfloat16" })).float(),
  );

  // broadcast from rank 1 of several tensors, with a 16-byte bucket so they travel in several buckets.
  const a = Tensor.fromArray(new Float32Array([rank, rank, rank]), [3]);
  const b = Tensor.fromArray(new Float32Array([100 + rank, 200 + rank, 300 + rank, 400 + rank, 500 + rank]), [5]);
  const c = Tensor.fromArray(new Float64Array([rank + 0.5]), [1]);
  pg.broadcast_([a, b, c], 1, 16 / 2 ** 20);
  out.broadcast = [values(a), values(b), values(c)];

  // all_gather: rank r contributes a (2, 2) block filled with r.
  const gathered = pg.allGather(Tensor.full([2, 2], rank));
  out.all_gather = { shape: gathered.shape, values: values(gathered) };
  pg.barrier();

  // average_grads: parameter grads set to (r+1)·k; a parameter without a gradient averages as zeros; tiny buckets.
  const p1 = Tensor.zeros([4]).requiresGrad_(true);
  const p2 = Tensor.zeros([2, 3]).requiresGrad_(true);
  const p3 = Tensor.zeros([2]).requiresGrad_(true);
  p1.mul(Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [4]).mul(rank + 1)).sum().backward();
  p2.mul(rank + 1).sum().backward();
  if (rank === 0) p3.mul(6).sum().backward();
  pg.averageGradients([p1, p2, p3], 8 / 2 ** 20);
  out.average_grads = [values(p1.grad!), values(p2.grad!), values(p3.grad!)];

  // gather_with_grad on the real CLIP loss: each rank holds its B rows of a 2B-row batch. The reference is the
  // single-process loss over all 2B rows, computed here without the group; its gradient rows for this rank must equal
  // this rank's gradient divided by the world size (DDP then averages parameter gradients the same way).
  const B = 3, E = 5;
  const feature = (row: number, col: number, salt: number): number => Math.sin(1.7 * row + 0.3 * col + salt);
  const block = (salt: number, rows: number[]): Float32Array =>
    new Float32Array(rows.flatMap((r) => Array.from({ length: E }, (_, c) => feature(r, c, salt))));
  const mine = Array.from({ length: B }, (_, i) => rank * B + i);
  const all = Array.from({ length: world * B }, (_, i) => i);
  const scale = Tensor.fromArray(new Float32Array([Math.exp(2.3)]), []);
  const local = [1, 2, 3].map((salt) => Tensor.fromArray(block(salt, mine), [B, E]).requiresGrad_(true));
  const dist = clipLoss({ imageU: local[0], imageV: local[1], text: local[2], logitScale: scale }, {
    gather: (t) => pg.gatherWithGrad(t),
    rank,
  });
  dist.loss.backward();
  const full = [1, 2, 3].map((salt) => Tensor.fromArray(block(salt, all), [world * B, E]).requiresGrad_(true));
  const reference = clipLoss({ imageU: full[0], imageV: full[1], text: full[2], logitScale: scale });
  reference.loss.backward();
  out.gather_with_grad = {
    grad: local.map((t) => values(t.grad!.div(world))),
    reference: full.map((t) => values(t.grad!.narrow(0, rank * B, B))),
    loss: [values(pg.allReduce_(dist.loss.detach().clone(), "avg"))[0], reference.loss.item()],
  };
});

pg.destroy();
console.log(JSON.stringify(out));
