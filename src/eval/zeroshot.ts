// zeroshot.ts: zero-shot classification as the official code does it (SPEC §7.1–§7.2): each class embedding is
// the normalised mean of the normalised embeddings of its prompts (every template × every synonym), images are
// normalised CLS embeddings, and the logits are plain cosine similarities.
import { F, noGrad, stack, type Tensor, tidy } from "../torch/mod.ts";

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

/** Top-k correctness per sample: logits (N, C), labels (N) int64 -> (N) bool for k = 1 and 5 (when C ≥ 5). */
export function topKCorrect(logits: Tensor, labels: Tensor, k: number): Tensor {
  return tidy(() => {
    const kk = Math.min(k, logits.size(1));
    const { indices } = logits.topk(kk, 1); // (N, k)
    return indices.eq(labels.unsqueeze(1)).sum(1).gt(0); // (N)
  });
}

export interface ZeroShotResult {
  top1: number;
  top5: number;
  /** Mean over classes of the per-class recall (the official metric for aircraft, pets, caltech101, flowers). */
  meanPerClass: number;
  count: number;
}

/** Accuracies in percent from (N, C) logits and (N) labels. */
export function zeroShotMetrics(logits: Tensor, labels: Tensor): ZeroShotResult {
  return tidy(() => {
    const count = labels.size(0);
    const classes = logits.size(1);
    const top1 = topKCorrect(logits, labels, 1).to({ dtype: "float64" });
    const top5 = topKCorrect(logits, labels, 5).to({ dtype: "float64" });
    const predicted = logits.argmax(1).toArray();
    const truth = labels.toArray();
    const hits = new Array<number>(classes).fill(0);
    const totals = new Array<number>(classes).fill(0);
    for (let i = 0; i < count; i++) {
      totals[truth[i]] += 1;
      if (predicted[i] === truth[i]) hits[truth[i]] += 1;
    }
    const present = totals.map((t, c) => [t, c]).filter(([t]) => t > 0);
    const meanPerClass = present.reduce((sum, [t, c]) => sum + hits[c] / t, 0) / Math.max(present.length, 1);
    return {
      top1: 100 * top1.mean().item(),
      top5: 100 * top5.mean().item(),
      meanPerClass: 100 * meanPerClass,
      count,
    };
  });
}
