// run_checkpoints.ts: the checkpoints of a running run. A save checks the state for NaN/Inf on every rank first (one
// device reduction; the ranks hold the same weights, so they stop together) and writes nothing non-finite; rank 0
// then writes everything an exact resume needs. It also keeps the newest finite checkpoint, which the NaN stops name,
// and sets aside the checkpoint whose parameters gave a non-finite loss.
import type { Tensor } from "../torch/mod.ts";
import { checkpointPath, listCheckpoints, saveCheckpoint } from "../checkpoint/checkpoint.ts";
import { nonFiniteTensors } from "../checkpoint/finite.ts";
import { stopIfLauncherGone } from "./launcher_link.ts";
import { captureRngStates, RNG_CPU_KEY, RNG_CUDA_KEY } from "./rng_state.ts";
import { gatherDataState } from "./data_state.ts";
import type { SyntheticEval } from "./evaluate.ts";
import type { TrainOptions } from "./options.ts";
import { type LatestCheckpoint, NONFINITE_LOSS_SUFFIX, NonFiniteStateError } from "./nonfinite.ts";
import type { StepRecord } from "./summary.ts";
import type { TrainRun } from "./setup.ts";

export class RunCheckpoints {
  /** This run's newest finite checkpoint (at first, the one it resumed from). */
  latest: LatestCheckpoint | null;

  constructor(
    private readonly run: TrainRun,
    /** The loss history so far, saved with each checkpoint (the loop appends to this array). */
    private readonly history: StepRecord[],
    private readonly evalBefore: SyntheticEval | null,
    latest: LatestCheckpoint | null,
  ) {
    this.latest = latest;
  }

  /** Checks the state after `step` optimizer steps for NaN/Inf, then rank 0 writes it (`best`: also as the best). */
  save(step: number, say: (line: string) => void, best = false): void {
    const { model, optimizer, ibot, pg, source, rank, options } = this.run;
    stopIfLauncherGone();
    const prefixed = (prefix: string, tensors: Iterable<[string, Tensor]>): [string, Tensor][] =>
      [...tensors].map(([key, value]) => [`${prefix}${key}`, value]);
    const checked = [
      ...prefixed("model.", model.stateDict()),
      ...prefixed("optimizer.", optimizer.stateTensors()),
      ...prefixed("ibot.", ibot?.stateDict() ?? []),
    ];
    const bad = nonFiniteTensors(checked);
    if (bad.length > 0) throw new NonFiniteStateError(step, bad, checked.length, this.latest);
    const dataState = gatherDataState(pg, source, step); // every rank's stream position (streaming sources)
    if (rank !== 0) {
      this.latest = { path: checkpointPath(options.outputDir, step), step, written: true }; // what rank 0 writes now
      return;
    }
    const state = this.state(step, dataState);
    try {
      const path = saveCheckpoint(options.outputDir, state, {
        keepLast: options.keepLast,
        best,
        log: say,
        finiteChecked: true,
      });
      this.latest = { path, step, written: true };
      say(`checkpoint: ${path}`);
    } finally {
      state.tensors.get(RNG_CPU_KEY)?.dispose();
      state.tensors.get(RNG_CUDA_KEY)?.dispose();
    }
  }

  /**
   * The loss of step k is computed from the parameters after k updates, which the checkpoint of step k holds: when
   * that loss is non-finite, the checkpoint (if this run wrote it) is renamed so --resume auto falls back to an older
   * one, from which a run with, say, a lower learning rate can recover. Returns the new name, or null.
   */
  setAsideCheckpointOf(k: number): string | null {
    const latest = this.latest;
    if (this.run.rank !== 0 || latest === null || latest.step !== k || !latest.written) return null;
    const aside = `${latest.path}${NONFINITE_LOSS_SUFFIX}`;
    Deno.renameSync(latest.path, aside);
    const older = listCheckpoints(this.run.options.outputDir).find((c) => c.step < k);
    this.latest = older === undefined ? null : { ...older, written: true };
    return aside;
  }

  /** Everything an exact resume reads: weights, moments, centers, RNG states (new tensors), and the metadata. */
  private state(
    step: number,
    dataState: unknown[] | null,
  ): { tensors: Map<string, Tensor>; meta: Record<string, unknown> } {
    const { model, optimizer, ibot, device, scaler, options, config, source, validation } = this.run;
    const tensors = new Map<string, Tensor>();
    for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
    for (const [key, value] of optimizer.stateTensors()) tensors.set(`optimizer.${key}`, value);
    if (ibot) { for (const [key, value] of ibot.stateDict()) tensors.set(`ibot.${key}`, value); }
    for (const [key, value] of captureRngStates(device)) tensors.set(key, value);
    return {
      tensors,
      meta: {
        step,
        epoch: Math.floor(step / this.run.schedule.stepsPerEpoch),
        optimizer_steps: optimizer.stepCount,
        scaler: scaler?.state() ?? null,
        options: withoutTestHooks(options),
        model_config: config,
        tokenizer_merges: source.tokenizer.merges,
        history: this.history,
        eval_before: this.evalBefore,
        best_checkpoint: validation.bestRecord,
        ...(dataState === null ? {} : { data_state: dataState }),
      },
    };
  }
}

/** The options as a checkpoint records them: a test hook belongs to the process that set it, not to the run. */
function withoutTestHooks(options: TrainOptions): Omit<TrainOptions, "testHookInjectNan" | "testHookSampleLog"> {
  const { testHookInjectNan: _nan, testHookSampleLog: _log, ...saved } = options;
  return saved;
}
