// official_resume.ts: continued training from an official DetailCLIP checkpoint (docs/training.md#checkpoints-and-resume):
// the weights through src/checkpoint/official_checkpoint.ts, then the AdamW moments and the grad scaler, which only
// the trainer owns. It lives in src/train so that reading a checkpoint does not depend on the optimizer.
import type { PickleValue } from "../formats/pickle.ts";
import { type Device, noGrad } from "../torch/mod.ts";
import { PtTensorRef } from "../torch/pt_file.ts";
import type { AnyModel } from "../models/build.ts";
import { loadOfficialWeights, type OfficialCheckpoint } from "../checkpoint/official_checkpoint.ts";
import type { GradScaler } from "./amp.ts";
import type { AdamW } from "./optimizer.ts";

/** How much of an official training state was restored, for the resume log line. */
export interface OfficialResume {
  /** The optimizer step to continue from: epochs completed × steps per epoch. */
  step: number;
  epoch: number;
  /** AdamW moments and step count restored, or why not (the weights are restored either way). */
  optimizer: { loaded: true; stepCount: number } | { loaded: false; reason: string };
  scaler: boolean;
}

/**
 * Continued training from an official checkpoint: the weights (strict), the AdamW moments when they map one to one
 * onto our official parameter groups (docs/training.md#optimizer: the same two groups, the same parameter order), the
 * grad scaler when both sides use one, and the epoch. The iBOT centers and the RNG are not in the file.
 */
export function restoreOfficialTraining(
  checkpoint: OfficialCheckpoint,
  parts: { model: AnyModel; modelName: string; optimizer: AdamW; scaler: GradScaler | null; device: Device },
  stepsPerEpoch: number,
): OfficialResume {
  loadOfficialWeights(parts.model, checkpoint, { modelName: parts.modelName, device: parts.device });
  const epoch = checkpoint.epoch ?? 0;
  const plan = planOptimizer(checkpoint, parts.optimizer);
  let optimizer: OfficialResume["optimizer"];
  if (typeof plan === "string") {
    optimizer = { loaded: false, reason: plan };
  } else {
    const live = parts.optimizer.stateTensors();
    noGrad(() => {
      for (const { name, expAvg, expAvgSq } of plan.moments) {
        using a = checkpoint.file.tensor(expAvg, { device: parts.device });
        using b = checkpoint.file.tensor(expAvgSq, { device: parts.device });
        live.get(`${name}.exp_avg`)!.copy_(a);
        live.get(`${name}.exp_avg_sq`)!.copy_(b);
      }
    });
    parts.optimizer.stepCount = plan.stepCount;
    optimizer = { loaded: true, stepCount: plan.stepCount };
  }
  let scaler = false;
  const saved = checkpoint.scaler;
  if (parts.scaler && saved instanceof Map) {
    const scale = saved.get("scale"), tracker = saved.get("_growth_tracker");
    if (typeof scale === "number" && typeof tracker === "number") {
      parts.scaler.load({ scale, growthTracker: tracker });
      scaler = true;
    }
  }
  return { step: epoch * stepsPerEpoch, epoch, optimizer, scaler };
}

/** The resume log line: what was restored and what the official file cannot hold. */
export function describeOfficialResume(path: string, resumed: OfficialResume): string {
  const optimizer = resumed.optimizer.loaded
    ? `AdamW moments and step count (${resumed.optimizer.stepCount}) restored`
    : `weights only: AdamW moments start at zero (${resumed.optimizer.reason})`;
  return `resume: official checkpoint ${path}, epoch ${resumed.epoch} -> step ${resumed.step}: weights loaded; ` +
    `${optimizer}${resumed.scaler ? "; grad scaler restored" : ""}; the iBOT centers start at zero and the RNG ` +
    "is reseeded (the official checkpoint holds neither)";
}

interface OptimizerPlan {
  moments: { name: string; expAvg: PtTensorRef; expAvgSq: PtTensorRef }[];
  stepCount: number;
}

/** Maps torch.optim.AdamW's state_dict onto our groups, or returns why it cannot (nothing is read or copied). */
function planOptimizer(checkpoint: OfficialCheckpoint, optimizer: AdamW): OptimizerPlan | string {
  const saved = checkpoint.optimizer;
  if (!(saved instanceof Map)) return "the file holds no optimizer state";
  const state = saved.get("state"), groups = saved.get("param_groups");
  if (!(state instanceof Map) || !Array.isArray(groups)) return "its optimizer entry is not a torch.optim state_dict";
  const ours = optimizer.groups;
  if (groups.length !== ours.length) return `${groups.length} parameter groups, ours has ${ours.length}`;
  const moments: OptimizerPlan["moments"] = [];
  let stepCount = 0;
  for (let g = 0; g < groups.length; g++) {
    const group = groups[g];
    if (!(group instanceof Map)) return `parameter group ${g} is not a dict`;
    const params = group.get("params");
    const decay = group.get("weight_decay");
    if (!Array.isArray(params)) return `parameter group ${g} has no params list`;
    if (params.length !== ours[g].params.length) {
      return `parameter group ${g} holds ${params.length} parameters, ours (${ours[g].name}) ${ours[g].params.length}`;
    }
    if (typeof decay === "number" && (decay === 0) !== (ours[g].weightDecay === 0)) {
      return `parameter group ${g} has weight decay ${decay}, ours (${ours[g].name}) ${ours[g].weightDecay}`;
    }
    for (let j = 0; j < params.length; j++) {
      const [name, p] = ours[g].params[j];
      const entry = state.get(params[j]);
      if (entry === undefined) continue; // never stepped: its moments stay zero
      if (!(entry instanceof Map)) return `the state of parameter ${String(params[j])} (${name}) is not a dict`;
      const expAvg = entry.get("exp_avg"), expAvgSq = entry.get("exp_avg_sq");
      if (!(expAvg instanceof PtTensorRef) || !(expAvgSq instanceof PtTensorRef)) {
        return `the state of ${name} holds no exp_avg/exp_avg_sq (not AdamW)`;
      }
      for (const ref of [expAvg, expAvgSq]) {
        if (ref.shape.length !== p.shape.length || ref.shape.some((d, i) => d !== p.shape[i])) {
          return `the moments of ${name} are [${ref.shape.join(", ")}], the parameter is [${p.shape.join(", ")}] ` +
            "(a different parameter order)";
        }
      }
      const step = readStep(checkpoint, entry.get("step"));
      if (step === null) return `the state of ${name} has no step count`;
      stepCount = Math.max(stepCount, step);
      moments.push({ name, expAvg, expAvgSq });
    }
  }
  return { moments, stepCount };
}

/** torch ≥ 1.12 stores AdamW's step as a 0-d float tensor, older versions as a number. */
function readStep(checkpoint: OfficialCheckpoint, value: PickleValue | undefined): number | null {
  if (typeof value === "number") return value;
  if (value instanceof PtTensorRef && value.numel === 1) {
    using t = checkpoint.file.tensor(value);
    return Math.round(t.item());
  }
  return null;
}
