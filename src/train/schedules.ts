// schedules.ts: every schedule is a pure function of the optimizer step (docs/training.md#schedules), so a
// resumed run continues exactly and nothing is precomputed into arrays sized by a guess of the loader length.

export interface CosineSchedule {
  base: number;
  final: number;
  totalSteps: number;
  warmupSteps: number;
  warmupStart: number;
}

/**
 * utils.cosine_scheduler: linspace(warmupStart, base, warmupSteps)[step] during warmup (both ends included, so the
 * last warmup step is exactly base), then final + ½(base − final)(1 + cos(π·(step − warmup)/(total − warmup))).
 */
export function cosineValue(schedule: CosineSchedule, step: number): number {
  const { base, final, totalSteps, warmupSteps, warmupStart } = schedule;
  if (step < warmupSteps) {
    if (warmupSteps === 1) return warmupStart;
    return warmupStart + (base - warmupStart) * (step / (warmupSteps - 1));
  }
  const span = totalSteps - warmupSteps;
  if (span <= 0) return base;
  const progress = Math.min(step - warmupSteps, span) / span;
  return final + 0.5 * (base - final) * (1 + Math.cos(Math.PI * progress));
}

/** EMA momentum: cosine from `start` to 1 over totalSteps optimizer steps (sized by optimizer steps,
 * docs/parity.md#momentum-schedule-by-optimizer-step). */
export function emaMomentum(start: number, step: number, totalSteps: number): number {
  if (totalSteps <= 0) return start;
  const progress = Math.min(step, totalSteps) / totalSteps;
  return 1 - (1 - start) * (1 + Math.cos(Math.PI * progress)) / 2;
}
