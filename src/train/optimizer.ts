// optimizer.ts: torch.optim.AdamW over named parameter groups, with the official DetailCLIP grouping
// (docs/training.md#optimizer). The update itself is one native foreach call per group; the moments are kept tensors
// owned by the optimizer.
import { type LoadReport, StateDictError } from "../nn/module.ts";
import { adamwStep_, noGrad, Tensor } from "../torch/mod.ts";

export interface ParamGroup {
  name: string;
  params: [string, Tensor][];
  weightDecay: number;
}

export interface AdamWOptions {
  betas: [number, number];
  eps: number;
}

/**
 * The official groups: no weight decay for parameters with ndim < 2 or whose name contains 'bias', 'ln' or 'bn'
 * (every bias, LayerNorm and logit_scale); weight decay `wd` for everything else, embeddings and cls/pos/mask
 * tokens included. Only trainable parameters are grouped.
 */
export function officialParamGroups(named: [string, Tensor][], weightDecay: number): ParamGroup[] {
  const decay: [string, Tensor][] = [];
  const noDecay: [string, Tensor][] = [];
  for (const entry of named) {
    const [name, p] = entry;
    if (!p.requiresGrad) continue;
    const exempt = p.ndim < 2 || name.includes("bias") || name.includes("ln") || name.includes("bn");
    (exempt ? noDecay : decay).push(entry);
  }
  return [
    { name: "decay", params: decay, weightDecay },
    { name: "no_decay", params: noDecay, weightDecay: 0 },
  ];
}

export class AdamW {
  readonly groups: ParamGroup[];
  readonly betas: [number, number];
  readonly eps: number;
  /** Optimizer steps taken (PyTorch's per-parameter `step`, shared: every trainable parameter gets a gradient). */
  stepCount = 0;
  readonly #expAvg: Tensor[][];
  readonly #expAvgSq: Tensor[][];

  constructor(groups: ParamGroup[], options: AdamWOptions) {
    this.groups = groups;
    this.betas = options.betas;
    this.eps = options.eps;
    this.#expAvg = groups.map((g) => g.params.map(([, p]) => zerosLike(p)));
    this.#expAvgSq = groups.map((g) => g.params.map(([, p]) => zerosLike(p)));
  }

  /** One step at learning rate lr for every group. */
  step(lr: number): void {
    this.stepCount += 1;
    noGrad(() => {
      this.groups.forEach((group, i) => {
        const params = group.params.map(([, p]) => p);
        adamwStep_(params, this.#expAvg[i], this.#expAvgSq[i], {
          lr,
          beta1: this.betas[0],
          beta2: this.betas[1],
          eps: this.eps,
          weightDecay: group.weightDecay,
        }, this.stepCount);
      });
    });
  }

  /** Drops every gradient (set_to_none, as the official loop). */
  zeroGrad(): void {
    for (const group of this.groups) for (const [, p] of group.params) p.zeroGrad(true);
  }

  /** The moments by parameter name, for checkpoints: `<name>.exp_avg`, `<name>.exp_avg_sq`. */
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    this.groups.forEach((group, i) => {
      group.params.forEach(([name], j) => {
        out.set(`${name}.exp_avg`, this.#expAvg[i][j]);
        out.set(`${name}.exp_avg_sq`, this.#expAvgSq[i][j]);
      });
    });
    return out;
  }

  /**
   * Restores moments saved by stateTensors() (same keys: `<name>.exp_avg`, `<name>.exp_avg_sq`; dtype and device
   * are converted) and the step count. All or nothing: a missing, unexpected or mis-shaped key throws a
   * StateDictError listing every one before anything is copied.
   */
  loadStateTensors(state: Map<string, Tensor>, stepCount: number): void {
    const own = this.stateTensors();
    const report: LoadReport = { missing: [], unexpected: [], mismatched: [] };
    for (const key of own.keys()) if (!state.has(key)) report.missing.push(key);
    for (const key of state.keys()) if (!own.has(key)) report.unexpected.push(key);
    for (const [key, target] of own) {
      const got = state.get(key)?.shape;
      const expected = target.shape;
      if (got !== undefined && (got.length !== expected.length || got.some((d, i) => d !== expected[i]))) {
        report.mismatched.push({ name: key, expected, got });
      }
    }
    if (report.missing.length + report.unexpected.length + report.mismatched.length > 0) {
      throw new StateDictError("AdamW optimizer state", report);
    }
    if (!Number.isSafeInteger(stepCount) || stepCount < 0) {
      throw new RangeError(`AdamW.loadStateTensors: stepCount must be a non-negative integer, got ${stepCount}`);
    }
    noGrad(() => {
      for (const [key, target] of own) target.copy_(state.get(key)!);
    });
    this.stepCount = stepCount;
  }

  numParameters(): number {
    return this.groups.reduce((total, g) => total + g.params.reduce((n, [, p]) => n + p.numel, 0), 0);
  }

  dispose(): void {
    for (const list of [...this.#expAvg, ...this.#expAvgSq]) for (const t of list) t.dispose();
  }
}

function zerosLike(p: Tensor): Tensor {
  return Tensor.zeros(p.shape, { dtype: p.dtype, device: p.device }).keep();
}
