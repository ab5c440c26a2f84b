// probe.ts: what a frozen vision tower's features are worth to a linear readout, the dense-feature claims of the
// paper at small scale:
// - linear probe: multinomial logistic regression on the CLS token (after the tower's final norm, before the CLIP
//   projection, as timm's head sees it), trained full-batch with Adam on standardised features; the L2 weight is
//   chosen on a held-out fifth of the training features from a small grid, then the probe is refit on all of them.
// - segmentation probe: a linear head per patch token (standardised patch tokens → C logits), the (g×g) logit maps
//   upsampled bilinearly to the image size, pixel cross-entropy with an ignore index, scored by mIoU over classes.
// Both are deterministic given the features (zero-initialised weights, full-batch or fixed-order mini-batches), so a
// comparison of two models is not a comparison of two random seeds of the probe.
import { adamwStep_, cat, type Device, F, noGrad, Tensor, tidy } from "../torch/mod.ts";
import type { EvalDataset } from "./datasets.ts";
import { topKCorrect } from "./zeroshot.ts";

/** A vision tower probes can read: every token after the final norm (our ViT; OpenAI/OpenCLIP's with ln_post). */
export interface FeatureTower {
  /** (B, 3, S, S) -> tokens (B, 1 + L, D), class token first. */
  forwardFeatures(images: Tensor): { tokens: Tensor };
}

/** Frozen features of a dataset: CLS (N, D), optionally patch tokens (N, L, D), and labels / masks in order. */
export interface Features {
  cls: Tensor;
  patches: Tensor | null;
  labels: Int32Array;
  /** N·H·W mask bytes, when collected. */
  masks: Uint8Array | null;
  dispose(): void;
}

/** Runs the tower in eval mode over `dataset` under no-grad; patch tokens and masks only when asked. */
export function extractFeatures(
  tower: FeatureTower,
  dataset: EvalDataset,
  options: { batchSize: number; device: Device; patches?: boolean },
): Features {
  const cls: Tensor[] = [];
  const patches: Tensor[] = [];
  const labels: number[] = [];
  const masks: Uint8Array[] = [];
  try {
    for (const batch of dataset.batches(options.batchSize, options.device)) {
      noGrad(() =>
        tidy(() => {
          const { tokens } = tower.forwardFeatures(batch.images); // (B, 1+L, D)
          cls.push(tokens.select(1, 0).contiguous().keep()); // (B, D)
          if (options.patches) patches.push(tokens.slice(1, 1).contiguous().keep()); // (B, L, D)
        })
      );
      batch.images.dispose();
      if (batch.labels) labels.push(...batch.labels);
      if (options.patches) {
        if (!batch.masks) throw new Error(`${dataset.name} has no masks for the segmentation probe`);
        masks.push(batch.masks);
      }
    }
    const all = tidy(() => ({
      cls: cat(cls, 0).keep(), // (N, D)
      patches: options.patches ? cat(patches, 0).keep() : null, // (N, L, D)
    }));
    let maskBytes: Uint8Array | null = null;
    if (options.patches) {
      maskBytes = new Uint8Array(masks.reduce((n, m) => n + m.length, 0));
      let at = 0;
      for (const m of masks) {
        maskBytes.set(m, at);
        at += m.length;
      }
    }
    return {
      cls: all.cls,
      patches: all.patches,
      labels: Int32Array.from(labels),
      masks: maskBytes,
      dispose: () => {
        all.cls.dispose();
        all.patches?.dispose();
      },
    };
  } finally {
    for (const t of [...cls, ...patches]) t.dispose();
  }
}

/** Per-feature mean and std over the rows of (N, D) (or (N, L, D) flattened), for standardising train and test alike. */
export function featureStats(x: Tensor): { mean: Tensor; std: Tensor } {
  return tidy(() => {
    const rows = x.reshape([-1, x.size(-1)]); // (N·L, D)
    return { mean: rows.mean(0), std: rows.std(0).add(1e-6) }; // (D), (D)
  });
}

// ---- linear probe ---------------------------------------------------------------------------------------------------

export interface LogisticOptions {
  classes: number;
  /** Weight of ‖W‖² (the bias is not regularised). */
  l2: number;
  iterations?: number;
  lr?: number;
}

/** Full-batch Adam on mean cross-entropy + l2·‖W‖²: x (N, D) float, y (N) int64 -> W (D, C), b (C), owned. */
export function fitLogistic(x: Tensor, y: Tensor, options: LogisticOptions): { weight: Tensor; bias: Tensor } {
  const { classes, l2, iterations = 300, lr = 0.05 } = options;
  const weight = Tensor.zeros([x.size(1), classes]).keep().requiresGrad_(); // (D, C)
  const bias = Tensor.zeros([classes]).keep().requiresGrad_(); // (C)
  const moments = [Tensor.zeros([x.size(1), classes]), Tensor.zeros([classes])].map((t) => t.keep());
  const squares = [Tensor.zeros([x.size(1), classes]), Tensor.zeros([classes])].map((t) => t.keep());
  try {
    for (let step = 1; step <= iterations; step++) {
      tidy(() => {
        const logits = x.matmul(weight).add(bias); // (N, C)
        const loss = F.crossEntropy(logits, y).add(weight.square().sum().mul(l2));
        loss.backward();
      });
      noGrad(() =>
        adamwStep_([weight, bias], moments, squares, { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, step)
      );
      weight.zeroGrad();
      bias.zeroGrad();
    }
    weight.requiresGrad_(false);
    bias.requiresGrad_(false);
    return { weight, bias };
  } finally {
    for (const t of [...moments, ...squares]) t.dispose();
  }
}

/** Top-1/top-5 accuracy (%) of a linear probe and the L2 penalty it chose. */
export interface LinearProbeResult {
  top1: number;
  top5: number;
  /** The L2 weight chosen on the validation fifth, and every candidate's validation top-1. */
  l2: number;
  grid: { l2: number; validationTop1: number }[];
  trainSize: number;
  testSize: number;
}

export const DEFAULT_L2_GRID: readonly number[] = [0, 1e-4, 1e-3, 1e-2, 1e-1];

/** Trains on `train` (last fifth held out to pick l2, then refit on all) and scores top-1/top-5 (%) on `test`. */
export function linearProbe(
  train: Features,
  test: Features,
  options: { classes: number; l2Grid?: readonly number[]; iterations?: number },
): LinearProbeResult {
  const grid = options.l2Grid ?? DEFAULT_L2_GRID;
  const n = train.cls.size(0);
  const split = Math.floor(n * 0.8);
  if (split < 1 || split >= n) throw new Error(`linear probe: ${n} training images are too few to hold out a fifth`);
  return tidy(() => {
    const { mean, std } = featureStats(train.cls);
    const xTrain = train.cls.sub(mean).div(std); // (N, D)
    const xTest = test.cls.sub(mean).div(std); // (M, D)
    const yTrain = Tensor.fromArray(train.labels, [n], { dtype: "int64" }); // (N)
    const yTest = Tensor.fromArray(test.labels, [test.labels.length], { dtype: "int64" }); // (M)
    const accuracy = (w: { weight: Tensor; bias: Tensor }, x: Tensor, y: Tensor, k: number): number =>
      tidy(() => 100 * topKCorrect(x.matmul(w.weight).add(w.bias), y, k).to({ dtype: "float64" }).mean().item());
    const scored = grid.map((l2) =>
      tidy(() => {
        const fit = fitLogistic(xTrain.narrow(0, 0, split), yTrain.narrow(0, 0, split), { ...options, l2 });
        try {
          return {
            l2,
            validationTop1: accuracy(fit, xTrain.narrow(0, split, n - split), yTrain.narrow(0, split, n - split), 1),
          };
        } finally {
          fit.weight.dispose();
          fit.bias.dispose();
        }
      })
    );
    // Ties go to the stronger regulariser: the simpler model when validation cannot tell them apart.
    const best = scored.reduce((a, b) => (b.validationTop1 >= a.validationTop1 ? b : a));
    const fit = fitLogistic(xTrain, yTrain, { ...options, l2: best.l2 });
    try {
      return {
        top1: accuracy(fit, xTest, yTest, 1),
        top5: accuracy(fit, xTest, yTest, 5),
        l2: best.l2,
        grid: scored,
        trainSize: n,
        testSize: test.labels.length,
      };
    } finally {
      fit.weight.dispose();
      fit.bias.dispose();
    }
  });
}

// ---- segmentation probe ---------------------------------------------------------------------------------------------

export interface SegProbeResult {
  /** Mean over classes (present in the test masks or predicted) of the IoU, percent. */
  mIoU: number;
  /** Per-class IoU in percent (NaN where the class neither occurs nor is predicted). */
  iou: number[];
  pixelAccuracy: number;
  trainSize: number;
  testSize: number;
}

export const IGNORE_INDEX = 255;

/**
 * IoU per class from (predicted, truth) pixel class arrays; pixels whose truth is `ignoreIndex` are skipped.
 * Classes with an empty union get NaN and stay out of the mean.
 */
export function meanIoU(
  predicted: ArrayLike<number>,
  truth: ArrayLike<number>,
  classes: number,
  ignoreIndex = IGNORE_INDEX,
): { mIoU: number; iou: number[]; pixelAccuracy: number } {
  const intersection = new Array<number>(classes).fill(0);
  const predictedCount = new Array<number>(classes).fill(0);
  const truthCount = new Array<number>(classes).fill(0);
  let labelled = 0, correct = 0;
  for (let i = 0; i < truth.length; i++) {
    const t = truth[i];
    if (t === ignoreIndex) continue;
    const p = predicted[i];
    labelled += 1;
    truthCount[t] += 1;
    predictedCount[p] += 1;
    if (p === t) {
      intersection[t] += 1;
      correct += 1;
    }
  }
  const iou = intersection.map((hit, c) => {
    const union = predictedCount[c] + truthCount[c] - hit;
    return union === 0 ? NaN : 100 * hit / union;
  });
  const valid = iou.filter((v) => !Number.isNaN(v));
  return {
    mIoU: valid.length === 0 ? 0 : valid.reduce((a, b) => a + b, 0) / valid.length,
    iou,
    pixelAccuracy: labelled === 0 ? 0 : 100 * correct / labelled,
  };
}

/**
 * Trains the per-patch linear head on `train` (patch tokens and masks) with mini-batch Adam and scores mIoU on
 * `test`. imageSize is the mask side; the patch grid side is sqrt(L).
 */
export function segmentationProbe(
  train: Features,
  test: Features,
  options: { classes: number; imageSize: number; epochs?: number; batchSize?: number; lr?: number; l2?: number },
): SegProbeResult {
  const { classes, imageSize, epochs = 10, batchSize = 100, lr = 0.05, l2 = 1e-4 } = options;
  if (!train.patches || !test.patches || !train.masks || !test.masks) {
    throw new Error("segmentation probe: features were extracted without patch tokens or masks");
  }
  const [n, length, dim] = train.patches.shape;
  const grid = Math.round(Math.sqrt(length));
  if (grid * grid !== length) throw new Error(`segmentation probe: ${length} patch tokens are not a square grid`);
  const { mean, std } = featureStats(train.patches);
  const weight = Tensor.zeros([dim, classes]).keep().requiresGrad_(); // (D, C)
  const bias = Tensor.zeros([classes]).keep().requiresGrad_(); // (C)
  const moments = [Tensor.zeros([dim, classes]), Tensor.zeros([classes])].map((t) => t.keep());
  const squares = [Tensor.zeros([dim, classes]), Tensor.zeros([classes])].map((t) => t.keep());
  const pixels = imageSize * imageSize;
  // (b, L, D) patch tokens -> (b, C, H, W) upsampled logits.
  const logitsOf = (tokens: Tensor): Tensor => {
    const b = tokens.size(0);
    const perPatch = tokens.sub(mean).div(std).matmul(weight).add(bias); // (b, L, C)
    const maps = perPatch.transpose(1, 2).reshape([b, classes, grid, grid]); // (b, C, g, g)
    return F.interpolate(maps, [imageSize, imageSize], "bilinear", false); // (b, C, H, W)
  };
  try {
    let step = 0;
    for (let epoch = 0; epoch < epochs; epoch++) {
      for (let start = 0; start < n; start += batchSize) {
        const b = Math.min(batchSize, n - start);
        step += 1;
        tidy(() => {
          const logits = logitsOf(train.patches!.narrow(0, start, b)); // (b, C, H, W)
          const flat = logits.permute([0, 2, 3, 1]).reshape([b * pixels, classes]); // (b·H·W, C)
          const target = Tensor.fromArray(train.masks!.subarray(start * pixels, (start + b) * pixels), [b * pixels], {
            dtype: "int64",
          }); // (b·H·W)
          const loss = F.crossEntropy(flat, target, { ignoreIndex: IGNORE_INDEX }).add(weight.square().sum().mul(l2));
          loss.backward();
        });
        noGrad(() =>
          adamwStep_(
            [weight, bias],
            moments,
            squares,
            { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
            step,
          )
        );
        weight.zeroGrad();
        bias.zeroGrad();
      }
    }
    const m = test.patches.size(0);
    const predicted = new Uint8Array(m * pixels);
    noGrad(() => {
      for (let start = 0; start < m; start += batchSize) {
        const b = Math.min(batchSize, m - start);
        tidy(() => {
          const labels = logitsOf(test.patches!.narrow(0, start, b)).argmax(1); // (b, H, W)
          predicted.set(Uint8Array.from(labels.toArray()), start * pixels);
        });
      }
    });
    const scored = meanIoU(predicted, test.masks, classes);
    return { ...scored, trainSize: n, testSize: m };
  } finally {
    for (const t of [weight, bias, mean, std, ...moments, ...squares]) t.dispose();
  }
}
