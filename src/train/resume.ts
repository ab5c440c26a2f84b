// resume.ts: --resume in its two formats. Our own checkpoints restore everything an uninterrupted run would hold
// (weights, optimizer moments, iBOT centers, RNG states, fp16 scale, loss history, the stream position), so the
// resumed run ends bit for bit where the straight one does; an official DetailCLIP .pt restores what it holds (weights,
// AdamW moments when they map, the epoch; no centers, no RNG). Rank 0 chooses the file, every rank reads it.
import type { Tensor } from "../torch/mod.ts";
import { PtFileError } from "../torch/pt_file.ts";
import { findResumeCheckpoint, loadCheckpoint } from "../checkpoint/checkpoint.ts";
import {
  isTorchCheckpoint,
  OfficialCheckpointError,
  openOfficialCheckpoint,
} from "../checkpoint/official_checkpoint.ts";
import { describeOfficialResume, type OfficialResume, restoreOfficialTraining } from "./official_resume.ts";
import { restoreRngStates } from "./rng_state.ts";
import { restoreDataState } from "./data_state.ts";
import { OptionError } from "./options.ts";
import type { SyntheticEval } from "./evaluate.ts";
import type { LatestCheckpoint } from "./nonfinite.ts";
import type { StepRecord } from "./summary.ts";
import type { TrainRun } from "./setup.ts";

/** Where a run starts: step 0 with nothing, or what a checkpoint held. */
export interface ResumePoint {
  step: number;
  history: StepRecord[];
  evalBefore: SyntheticEval | null;
  /** The checkpoint resumed from (ours only): the newest finite one until this run writes its own. */
  latest: LatestCheckpoint | null;
}

/** Restores `run` from --resume (auto: the newest good checkpoint in the output folder), or starts from scratch. */
export function resumeRun(run: TrainRun): ResumePoint {
  const { options, pg, rank, world, log } = run;
  const start: ResumePoint = { step: 0, history: [], evalBefore: null, latest: null };
  if (!options.resume) return start;
  const found = options.resume === "auto" && rank === 0 ? findResumeCheckpoint(options.outputDir) : null;
  for (const skipped of found?.skipped ?? []) log(`resume: skipping ${skipped.path}: ${skipped.reason}`);
  const chosen = options.resume === "auto" ? found?.path ?? null : options.resume;
  const path = JSON.parse(pg.broadcastText(JSON.stringify(chosen))) as string | null; // rank 0's choice
  if (path === null) {
    log(`resume: no checkpoint in ${options.outputDir}; starting from scratch`);
    return start;
  }
  if (isTorchCheckpoint(path)) {
    const { model, config, optimizer, scaler, device } = run;
    const parts = { model, modelName: config.name, optimizer, scaler, device };
    const resumed = resumeOfficial(path, parts, run.schedule.stepsPerEpoch);
    log(describeOfficialResume(path, resumed));
    return { ...start, step: resumed.step };
  }
  const restored = restore(path, run);
  const inexact = restoreDataState(run.source, restored.dataState, rank, world);
  if (inexact !== null) log(inexact);
  run.validation.restoreBest(restored.best);
  log(`resume: ${path} at step ${restored.step}`);
  return {
    step: restored.step,
    history: restored.history,
    evalBefore: restored.evalBefore,
    latest: { path, step: restored.step, written: false },
  };
}

/** One of our checkpoints into the model, optimizer, iBOT centers, RNGs and scaler; returns what the loop needs. */
function restore(
  path: string,
  parts: Pick<TrainRun, "model" | "optimizer" | "ibot" | "scaler" | "device">,
): { step: number; history: StepRecord[]; evalBefore: SyntheticEval | null; best: unknown; dataState: unknown } {
  const { tensors, meta } = loadCheckpoint(path);
  try {
    const section = (prefix: string): Map<string, Tensor> => {
      const out = new Map<string, Tensor>();
      for (const [key, value] of tensors) if (key.startsWith(prefix)) out.set(key.slice(prefix.length), value);
      return out;
    };
    parts.model.loadStateDict(section("model."), { where: path });
    parts.optimizer.loadStateTensors(section("optimizer."), Number(meta.optimizer_steps ?? meta.step));
    if (parts.ibot) parts.ibot.loadStateDict(section("ibot."), { where: path });
    restoreRngStates(tensors, parts.device);
    if (parts.scaler && meta.scaler) parts.scaler.load(meta.scaler as { scale: number; growthTracker: number });
    return {
      step: Number(meta.step),
      history: (meta.history as StepRecord[] | undefined) ?? [],
      evalBefore: (meta.eval_before as SyntheticEval | null | undefined) ?? null,
      best: meta.best_checkpoint,
      dataState: meta.data_state,
    };
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** restoreOfficialTraining, with an unreadable or mismatched file reported as a --resume option error. */
function resumeOfficial(
  path: string,
  parts: Parameters<typeof restoreOfficialTraining>[1],
  stepsPerEpoch: number,
): OfficialResume {
  try {
    using official = openOfficialCheckpoint(path);
    return restoreOfficialTraining(official, parts, stepsPerEpoch);
  } catch (error) {
    if (error instanceof PtFileError || error instanceof OfficialCheckpointError) {
      throw new OptionError(`--resume ${error.message}`);
    }
    throw error;
  }
}
