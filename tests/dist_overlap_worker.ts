// dist_overlap_worker.ts: one rank of dist_overlap_test.ts (not a test itself). Started twice with torchrun
// variables; trains nothing, but computes the gradients of one DetailCLIP step on this rank's batch and averages them
// over ranks in two ways: ProcessGroup.averageGradients after backward (the reference) and a GradientReducer whose
// buckets start during backward. Cases: plain, two accumulated micro-batches (prepare before the second only), and
// --grad-checkpointing (several engine calls per backward). Prints one JSON line: per case and step, the largest
// difference from the reference and the buckets launched during backward; then the error of a step whose backward
// graph changed after the reducer learned it.
import { detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import { type DetailClipConfig, parseModelConfig } from "../src/models/configs.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { ActivationCheckpoints, withCheckpoints } from "../src/nn/checkpoint.ts";
import { ProcessGroup } from "../src/torch/dist.ts";
import { manualSeed, Tensor, tidy } from "../src/torch/mod.ts";

const config = parseModelConfig({
  kind: "detailclip",
  name: "overlap-test",
  embedDim: 16,
  vision: { imageSize: 64, patchSize: 8, width: 32, depth: 3, heads: 4 },
  text: { context: 8, vocab: 64, width: 32, layers: 2, heads: 4 },
  decoder: { depth: 2, heads: 4 },
  ibot: { outDim: 48, patchOutDim: 48, hiddenDim: 32, bottleneckDim: 16 },
  maskRatio: 0.5,
  maskCell: 2,
}, "test") as DetailClipConfig;

const pg = ProcessGroup.fromEnv({ timeoutMs: 60_000 });
const { rank } = pg;
manualSeed(0); // the same weights on every rank
const model = new DetailCLIP(config);
const trainable = model.namedTrainableParameters().map(([, p]) => p);
manualSeed(100 + rank); // this rank's batches
const batches = [0, 1].map(() => ({
  u: Tensor.randn([2, 3, 64, 64]),
  v: Tensor.randn([2, 3, 64, 64]),
  text: Tensor.fromArray([1, 2, 63, 0, 0, 0, 0, 0, 3, 4, 5, 63, 0, 0, 0, 0].map((t) => (t + rank) % 64), [2, 8], {
    dtype: "int64",
  }),
}));

/** Backward of micro-batch i's loss (with or without checkpointing); `before` runs just before the backward. */
function backward(i: number, checkpoints: ActivationCheckpoints | null, before: () => void = () => {}): void {
  const ibot = new IBOTLoss({ outDim: 48, patchOutDim: 48 });
  tidy(() => {
    const { u, v, text } = batches[i];
    const loss = withCheckpoints(checkpoints, () => {
      const out = model.forwardTrain(u, v, text, null);
      // The CLIP loss gathers features with gradient: a collective inside backward, among the buckets.
      const dist = {
        gather: (t: Tensor) => pg.gatherWithGrad(t),
        allReduceMean: (t: Tensor) => pg.allReduceMean(t),
        rank,
      };
      return detailClipLoss(out, { u, v }, ibot, 0, { patchSize: 8, ...dist }).loss;
    });
    before();
    if (checkpoints) checkpoints.backward(loss);
    else loss.backward();
  });
  ibot.dispose();
}

function grads(): Float32Array[] {
  const out = trainable.map((p) => {
    const g = p.grad;
    const values = g === null ? new Float32Array(p.numel) : new Float32Array(g.toArray() as ArrayLike<number>);
    g?.dispose();
    return values;
  });
  model.zeroGrad();
  return out;
}

function maxDiff(a: Float32Array[], b: Float32Array[]): number {
  let worst = 0;
  a.forEach((x, k) => x.forEach((value, i) => (worst = Math.max(worst, Math.abs(value - b[k][i])))));
  return worst;
}

const cases = {
  plain: { micro: 1, checkpointing: false },
  accumulated: { micro: 2, checkpointing: false },
  checkpointed: { micro: 1, checkpointing: true },
};
const out: Record<string, unknown> = { rank };
for (const [name, spec] of Object.entries(cases)) {
  const checkpoints = spec.checkpointing ? new ActivationCheckpoints() : null;
  for (let i = 0; i < spec.micro; i++) backward(i, checkpoints);
  pg.averageGradients(trainable, 0.01);
  const reference = grads();
  // A 10 KB bucket cap: many buckets, so the launch order matters.
  const reducer = pg.gradientReducer(trainable, 0.01)!;
  const steps: { diff: number; overlapped: number }[] = [];
  for (let step = 0; step < 3; step++) {
    for (let i = 0; i < spec.micro; i++) backward(i, checkpoints, () => i === spec.micro - 1 && reducer.prepare());
    const overlapped = reducer.finish();
    steps.push({ diff: maxDiff(grads(), reference), overlapped });
  }
  out[name] = { buckets: reducer.buckets, steps };
  reducer.dispose();
}
// A backward whose graph changed after the counts were learned (checkpointing switched on: two gradients per
// ViT block parameter instead of one) must stop with an error, not average half a gradient.
{
  const reducer = pg.gradientReducer(trainable, 0.01)!;
  backward(0, null, () => reducer.prepare());
  reducer.finish();
  model.zeroGrad();
  backward(0, new ActivationCheckpoints(), () => reducer.prepare());
  try {
    reducer.finish();
    out.changed_graph = "no error";
  } catch (error) {
    out.changed_graph = (error as Error).message;
  }
  model.zeroGrad();
  reducer.dispose();
}
pg.barrier();
console.log(JSON.stringify(out));
pg.destroy();
