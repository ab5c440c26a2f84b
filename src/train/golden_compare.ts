// golden_compare.ts: compares tensors with reference tensors under the golden files' tolerances
// (tests/fixtures/golden/README.md) and reports the worst tensor of each file, never an average.
import { noGrad, type Tensor, tidy } from "../torch/mod.ts";

export type Rule =
  | { kind: "exact" } // masks: identical
  | { kind: "relative"; rtol: number; atol: number } // forward outputs and losses, per element
  | { kind: "max-relative"; tol: number } // gradients: relative to the tensor's max magnitude
  | { kind: "absolute-where"; atol: number; where: Tensor; threshold: number }; // after-step params where |grad| > t

export interface TensorResult {
  name: string;
  /** error / allowed error; the tensor passes when score ≤ 1. */
  score: number;
  maxAbsError: number;
  detail: string;
}

export interface FileResult {
  file: string;
  compared: number;
  missing: string[];
  failures: TensorResult[];
  worst: TensorResult | null;
}

/** Scores one tensor against its reference; shapes must match exactly. */
export function compareTensor(name: string, actual: Tensor, expected: Tensor, rule: Rule): TensorResult {
  const shapeA = actual.shape;
  const shapeE = expected.shape;
  if (shapeA.length !== shapeE.length || shapeA.some((d, i) => d !== shapeE[i])) {
    return { name, score: Infinity, maxAbsError: Infinity, detail: `shape [${shapeA}] != reference [${shapeE}]` };
  }
  return noGrad(() =>
    tidy(() => {
      if (rule.kind === "exact") {
        const differing = actual.ne(expected).sum().item();
        return { name, score: differing === 0 ? 0 : Infinity, maxAbsError: differing, detail: `${differing} differ` };
      }
      const a = actual.to({ dtype: "float64" });
      const e = expected.to({ dtype: "float64" });
      const error = a.sub(e).abs();
      const maxAbsError = error.numel === 0 ? 0 : error.amax().item();
      if (rule.kind === "relative") {
        const allowed = e.abs().mul(rule.rtol).add(rule.atol);
        const score = error.numel === 0 ? 0 : error.div(allowed).amax().item();
        return {
          name,
          score,
          maxAbsError,
          detail: `max |Δ| ${fmt(maxAbsError)} (rtol ${rule.rtol}, atol ${rule.atol})`,
        };
      }
      if (rule.kind === "max-relative") {
        const scale = e.numel === 0 ? 0 : e.abs().amax().item();
        const relative = scale === 0 ? (maxAbsError === 0 ? 0 : Infinity) : maxAbsError / scale;
        return { name, score: relative / rule.tol, maxAbsError, detail: `max |Δ|/max|ref| ${fmt(relative)}` };
      }
      const selected = rule.where.abs().gt(rule.threshold);
      const masked = error.mul(selected.to({ dtype: "float64" }));
      const worst = masked.numel === 0 ? 0 : masked.amax().item();
      const count = selected.sum().item();
      return {
        name,
        score: worst / rule.atol,
        maxAbsError: worst,
        detail: `max |Δ| ${fmt(worst)} over ${count} entries with |grad| > ${rule.threshold}`,
      };
    })
  );
}

export function summarize(file: string, results: TensorResult[], missing: string[]): FileResult {
  const failures = results.filter((r) => !(r.score <= 1));
  const worst = results.reduce<TensorResult | null>((w, r) => (w === null || !(r.score <= w.score) ? r : w), null);
  return { file, compared: results.length, missing, failures, worst };
}

export function fmt(x: number): string {
  return Number.isFinite(x) ? x.toExponential(2) : String(x);
}
