// zeroshot.ts: zero-shot classification as the official code does it (docs/evaluation.md#zero-shot-classification):
// each class embedding is the normalised mean of the normalised embeddings of its prompts (every template × every
// synonym), images are normalised CLS embeddings, and the logits are plain cosine similarities. The metrics: top-1,
// top-5, mean per-class accuracy, the confusion matrix behind it, and for two-class sets the ROC-AUC of logit[1] −
// logit[0] (the official hateful_memes metric).
import { F, noGrad, stack, Tensor, tidy } from "../torch/mod.ts";

export interface TextEncoder {
  /** (N, T) int64 token ids -> (N, E). */
  encodeText(tokens: Tensor): Tensor;
}

export type Tokenize = (texts: string[]) => Tensor;

/** (C, E) class embeddings; a class may have several names (synonyms), all averaged with every template. */
export function zeroShotClassifier(
  model: TextEncoder,
  tokenize: Tokenize,
  classNames: readonly (string | readonly string[])[],
  templates: readonly string[],
): Tensor {
  if (templates.length === 0) throw new Error("zero-shot: no templates");
  const blind = templates.find((t) => !t.includes("{}"));
  if (blind !== undefined) {
    throw new Error(`zero-shot: template ${JSON.stringify(blind)} has no "{}": every class would get the same prompt`);
  }
  return noGrad(() =>
    tidy(() => {
      const rows = classNames.map((names) => {
        const synonyms = typeof names === "string" ? [names] : names;
        const prompts = synonyms.flatMap((name) => templates.map((t) => t.replaceAll("{}", name)));
        const embeddings = F.normalize(model.encodeText(tokenize(prompts)), { dim: -1 }); // (P, E)
        return F.normalize(embeddings.mean(0), { dim: -1 }); // (E)
      });
      return stack(rows, 0); // (C, E)
    })
  );
}

/**
 * Top-k correctness per sample: logits (N, C), labels (N) int64 -> (N) bool. The true class's rank is the number
 * of classes scoring strictly higher plus the tied ones with a lower index (argmax's rule: ties go to the lowest
 * index). torch.topk, which the official code uses, orders ties arbitrarily (a partial sort), so top-1 and the
 * argmax-based mean-per-class could disagree on the same sample; this rule is deterministic and gives a collapsed
 * model (all logits equal) chance-level accuracy rather than 100%. A non-finite true-class logit is never correct.
 */
export function topKCorrect(logits: Tensor, labels: Tensor, k: number): Tensor {
  return tidy(() => {
    const classes = logits.size(1);
    const index = labels.unsqueeze(1); // (N, 1)
    const target = logits.gather(1, index); // (N, 1)
    const lower = Tensor.arange(0, classes, 1, { device: logits.device }).unsqueeze(0).lt(index); // (N, C)
    const rank = logits.gt(target).sum(1).add(logits.eq(target).logicalAnd(lower).sum(1)); // (N)
    return rank.lt(k).logicalAnd(target.squeeze(1).isfinite()); // (N)
  });
}

/** Zero-shot top-1, top-5 and mean per-class accuracy (%), the confusion matrix, and ROC-AUC for two classes. */
export interface ZeroShotResult {
  top1: number;
  top5: number;
  /** Mean over classes of the per-class recall (the official metric for aircraft, pets, caltech101, flowers). */
  meanPerClass: number;
  count: number;
  /** Two-class sets: ROC-AUC ×100 of the score logit[1] − logit[0], class 1 positive (NaN if a class is absent). */
  rocAuc?: number;
  /** (C, C) counts, rows = true class, columns = predicted class (argmax, ties to the lowest index). */
  confusion: number[][];
}

/**
 * ROC-AUC in [0, 1] of `scores` for binary `positive` flags: the probability that a random positive scores above a
 * random negative, a tie counting one half (the Mann–Whitney statistic with mid-ranks, which equals sklearn's
 * trapezoidal roc_auc_score). NaN when either class is absent or a score is not finite.
 */
export function rocAuc(scores: ArrayLike<number>, positive: ArrayLike<boolean | number>): number {
  const n = scores.length;
  if (positive.length !== n) throw new Error(`rocAuc: ${n} scores but ${positive.length} labels`);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let positives = 0, rankSum = 0;
  for (let i = 0; i < n;) {
    if (!Number.isFinite(scores[order[i]])) return NaN;
    let j = i;
    while (j + 1 < n && scores[order[j + 1]] === scores[order[i]]) j++;
    const midRank = (i + j) / 2 + 1; // ranks are 1-based; tied scores share the mean of their ranks
    for (let k = i; k <= j; k++) {
      if (positive[order[k]]) {
        positives += 1;
        rankSum += midRank;
      }
    }
    i = j + 1;
  }
  const negatives = n - positives;
  if (positives === 0 || negatives === 0) return NaN;
  return (rankSum - positives * (positives + 1) / 2) / (positives * negatives);
}

/** (C, C) confusion counts from true and predicted class indices (rows = true class). */
export function confusionMatrix(truth: ArrayLike<number>, predicted: ArrayLike<number>, classes: number): number[][] {
  const matrix = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  for (let i = 0; i < truth.length; i++) {
    if (predicted[i] >= 0 && predicted[i] < classes) matrix[truth[i]][predicted[i]] += 1;
  }
  return matrix;
}

/** Accuracies in percent (and the confusion matrix) from (N, C) logits and (N) labels. */
export function zeroShotMetrics(logits: Tensor, labels: Tensor): ZeroShotResult {
  return tidy(() => {
    const count = labels.size(0);
    const classes = logits.size(1);
    const top1 = topKCorrect(logits, labels, 1).to({ dtype: "float64" });
    const top5 = topKCorrect(logits, labels, 5).to({ dtype: "float64" });
    // Per-class recall from the same top-1 decisions, so ties are settled the same way in both numbers.
    const correct = topKCorrect(logits, labels, 1).toArray();
    const truth = labels.toArray();
    const hits = new Array<number>(classes).fill(0);
    const totals = new Array<number>(classes).fill(0);
    for (let i = 0; i < count; i++) {
      totals[truth[i]] += 1;
      if (correct[i]) hits[truth[i]] += 1;
    }
    const present = totals.map((t, c) => [t, c]).filter(([t]) => t > 0);
    const meanPerClass = present.reduce((sum, [t, c]) => sum + hits[c] / t, 0) / Math.max(present.length, 1);
    // torch.argmax returns the first maximal index: the same tie rule as topKCorrect for finite logits.
    const predicted = logits.argmax(1).toArray(); // (N)
    let auc: number | undefined;
    if (classes === 2) {
      const scores = logits.select(1, 1).sub(logits.select(1, 0)).to({ dtype: "float64" }).toArray(); // (N)
      auc = 100 * rocAuc(scores, truth.map((t) => t === 1));
    }
    return {
      top1: 100 * top1.mean().item(),
      top5: 100 * top5.mean().item(),
      meanPerClass: 100 * meanPerClass,
      count,
      ...(auc === undefined ? {} : { rocAuc: auc }),
      confusion: confusionMatrix(truth, predicted, classes),
    };
  });
}
