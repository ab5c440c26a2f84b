// nonfinite.ts: how a run stops on NaN/Inf. A non-finite loss names the step and the term and sets aside the
// checkpoint whose parameters gave it; non-finite parameters found before a save write nothing. Both name the newest
// finite checkpoint, from which a run with, say, a lower learning rate can go on.
import { describeNonFinite } from "../checkpoint/finite.ts";

/** The newest finite checkpoint of this run, as the NaN stops name it. */
export interface LatestCheckpoint {
  path: string;
  step: number;
  /** Written by this run (not the one it resumed from). */
  written: boolean;
}

/** The suffix a checkpoint is renamed with when its parameters gave a non-finite loss: --resume auto passes it by. */
export const NONFINITE_LOSS_SUFFIX = ".nonfinite-loss";

function describeLatest(latest: LatestCheckpoint | null): string {
  return latest === null
    ? "no checkpoint was written"
    : `the latest checkpoint is ${latest.path} (step ${latest.step}, finite)`;
}

/** A non-finite loss: names the first optimizer step whose loss was non-finite, the term, and the latest checkpoint. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly step: number,
    readonly term: string,
    readonly value: number,
    readonly latest: LatestCheckpoint | null = null,
    readonly setAside: string | null = null,
  ) {
    const aside = setAside === null
      ? ""
      : `; the checkpoint of step ${step}, whose parameters gave it, is now ${setAside}`;
    super(`non-finite loss at step ${step}: ${term} = ${value}; stopping${aside}; ${describeLatest(latest)}`);
    this.name = "NonFiniteLossError";
  }
}

/**
 * Parameters or optimizer state that went non-finite although every loss so far was finite (an update overflowed,
 * e.g. `--lr 1e308`): found by the check before a save, which then writes nothing.
 */
export class NonFiniteStateError extends Error {
  constructor(
    readonly step: number,
    readonly tensors: string[],
    total: number,
    readonly latest: LatestCheckpoint | null,
  ) {
    super(
      `non-finite parameters or optimizer state after step ${step}: ${describeNonFinite(tensors, total)}, while ` +
        `the losses before it were finite (an update overflowed: is the learning rate too large?); ` +
        `not saved; stopping; ${describeLatest(latest)}`,
    );
    this.name = "NonFiniteStateError";
  }
}
