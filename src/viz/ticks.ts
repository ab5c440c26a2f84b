// ticks.ts: "nice" tick steps (1, 2 or 5 × 10^k) for axes drawn in pixels; the only axis arithmetic of the figures
// and the loss curves (src/viz/loss_curve.ts). It
// trades generality (no log axes, no dates) for a rule a reader predicts: ticks at whole multiples of the step.

/** The mantissas of the figures' tick steps: 1, 2 or 5 × 10^k. */
export const NICE_MANTISSAS: readonly number[] = [1, 2, 5];

/**
 * The smallest step of the form m × 10^k (m from `mantissas`, ascending, each in [1, 10)) that is at least `rawStep`
 * (rawStep > 0). The loss curves add 2.5 to the mantissas, for finer steps between 2 and 5.
 */
export function niceStep(rawStep: number, mantissas: readonly number[] = NICE_MANTISSAS): number {
  if (!(rawStep > 0) || !Number.isFinite(rawStep)) throw new RangeError(`niceStep: step must be > 0, got ${rawStep}`);
  const power = 10 ** Math.floor(Math.log10(rawStep));
  for (const m of mantissas) if (m * power >= rawStep * (1 - 1e-12)) return m * power;
  return 10 * power;
}

/** The multiples of `step` in [min, max] (with a little slack for float noise), ascending. */
export function ticksBetween(min: number, max: number, step: number): number[] {
  const out: number[] = [];
  const first = Math.ceil(min / step - 1e-9);
  for (let i = first; i * step <= max + step * 1e-9; i++) out.push(Number((i * step).toPrecision(12)));
  return out;
}
