// ticks.ts: "nice" tick steps (1, 2 or 5 × 10^k) for axes drawn in pixels; the figures' only axis arithmetic. It
// trades generality (no log axes, no dates) for a rule a reader predicts: ticks at whole multiples of the step.

/** The smallest step of the form 1, 2 or 5 × 10^k that is at least `rawStep` (rawStep > 0). */
export function niceStep(rawStep: number): number {
  if (!(rawStep > 0) || !Number.isFinite(rawStep)) throw new RangeError(`niceStep: step must be > 0, got ${rawStep}`);
  const power = 10 ** Math.floor(Math.log10(rawStep));
  for (const m of [1, 2, 5, 10]) if (m * power >= rawStep * (1 - 1e-12)) return m * power;
  return 10 * power;
}

/** The multiples of `step` in [min, max] (with a little slack for float noise), ascending. */
export function ticksBetween(min: number, max: number, step: number): number[] {
  const out: number[] = [];
  const first = Math.ceil(min / step - 1e-9);
  for (let i = first; i * step <= max + step * 1e-9; i++) out.push(Number((i * step).toPrecision(12)));
  return out;
}
