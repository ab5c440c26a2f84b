// metrics.ts: running averages of named scalars, weighted by batch size. Sums and counts are float64 with
// compensated (Neumaier) addition, and nothing is truncated: the official AverageMeter.synchronize turned the summed
// value into an int before dividing (docs/parity.md#exact-epoch-averages), which this replaces. The sums and counts are
// exposed as one flat vector so ranks can all-reduce them and then average, which is exact where averaging averages is
// not.

/** Plain sums and counts by name, for merging meters across ranks. */
export interface MeterSnapshot {
  names: string[];
  sums: number[];
  counts: number[];
}

/** A float64 accumulator with Neumaier compensation: long runs of small losses keep their low bits. */
class CompensatedSum {
  sum = 0;
  compensation = 0;

  add(x: number): void {
    const t = this.sum + x;
    if (!Number.isFinite(t)) {
      // The compensation would turn an infinite sum into NaN; keep what plain addition says.
      this.sum = t;
      this.compensation = 0;
      return;
    }
    if (Math.abs(this.sum) >= Math.abs(x)) this.compensation += this.sum - t + x;
    else this.compensation += x - t + this.sum;
    this.sum = t;
  }

  get value(): number {
    return this.sum + this.compensation;
  }
}

export class MetricMeter {
  readonly #sums = new Map<string, CompensatedSum>();
  readonly #counts = new Map<string, CompensatedSum>();

  /** Adds each value with weight `weight` (the batch size: a mean over that many samples). */
  update(values: Record<string, number>, weight = 1): void {
    if (!(Number.isFinite(weight) && weight >= 0)) {
      throw new RangeError(`MetricMeter.update: weight must be a finite number >= 0, got ${weight}`);
    }
    for (const [name, value] of Object.entries(values)) {
      if (typeof value !== "number") {
        throw new TypeError(`MetricMeter.update: '${name}' is a ${typeof value}, not a number`);
      }
      this.#accumulate(name, value * weight, weight);
    }
  }

  /** sum / count per name (NaN where every weight was 0); a NaN value shows up in its average, as it should. */
  averages(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, sum] of this.#sums) {
      const count = this.#counts.get(name)!.value;
      out[name] = count > 0 ? sum.value / count : Number.NaN;
    }
    return out;
  }

  /** Total weight seen per name. */
  counts(): Record<string, number> {
    return Object.fromEntries([...this.#counts].map(([name, c]) => [name, c.value]));
  }

  reset(): void {
    this.#sums.clear();
    this.#counts.clear();
  }

  /** Sums and counts, names sorted, so every rank lists them in the same order. */
  snapshot(): MeterSnapshot {
    const names = [...this.#sums.keys()].sort();
    return {
      names,
      sums: names.map((n) => this.#sums.get(n)!.value),
      counts: names.map((n) => this.#counts.get(n)!.value),
    };
  }

  /** Adds another meter's (or rank's) sums and counts to this one. */
  merge(other: MetricMeter | MeterSnapshot): void {
    const snapshot = other instanceof MetricMeter ? other.snapshot() : other;
    const { names, sums, counts } = snapshot;
    if (sums.length !== names.length || counts.length !== names.length) {
      throw new RangeError(
        `MetricMeter.merge: ${names.length} names but ${sums.length} sums and ${counts.length} counts`,
      );
    }
    names.forEach((name, i) => this.#accumulate(name, sums[i], counts[i]));
  }

  /**
   * `[sum_0..sum_n-1, count_0..count_n-1]` over `names` (default: this meter's, sorted), for one all-reduce (sum).
   * Every rank must pass the same names; a name this meter has not seen contributes zeros.
   */
  pack(names: string[] = this.snapshot().names): Float64Array {
    const out = new Float64Array(2 * names.length);
    names.forEach((name, i) => {
      out[i] = this.#sums.get(name)?.value ?? 0;
      out[names.length + i] = this.#counts.get(name)?.value ?? 0;
    });
    return out;
  }

  /** A meter holding the sums and counts of a packed (e.g. all-reduced) vector. */
  static unpack(names: string[], packed: ArrayLike<number>): MetricMeter {
    if (packed.length !== 2 * names.length) {
      throw new RangeError(
        `MetricMeter.unpack: ${names.length} names need ${2 * names.length} values, got ${packed.length}`,
      );
    }
    const meter = new MetricMeter();
    const sums = Array.from({ length: names.length }, (_, i) => packed[i]);
    const counts = Array.from({ length: names.length }, (_, i) => packed[names.length + i]);
    meter.merge({ names, sums, counts });
    return meter;
  }

  #accumulate(name: string, sum: number, count: number): void {
    let s = this.#sums.get(name);
    let c = this.#counts.get(name);
    if (s === undefined || c === undefined) {
      s = new CompensatedSum();
      c = new CompensatedSum();
      this.#sums.set(name, s);
      this.#counts.set(name, c);
    }
    s.add(sum);
    c.add(count);
  }
}
