// train_utils_test.ts: the training run's bookkeeping: exact metric averages (against closed forms and against
// the int() truncation of the official AverageMeter, docs/parity.md#exact-epoch-averages), merging meters across ranks,
// JSONL appends across writers and resumes, the progress line's format and throttling, and the loss-curve SVG's
// structure.
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { formatDuration, JsonlWriter, ProgressBar, readJsonl, significant } from "../src/train/logging.ts";
import { MetricMeter } from "../src/train/metrics.ts";
import { lossCurveSvg } from "../src/viz/loss_curve.ts";

function relativeError(actual: number, expected: number): number {
  return Math.abs(actual - expected) / Math.abs(expected);
}

// ---- MetricMeter -------------------------------------------------------------------------------------------------

Deno.test("MetricMeter: batch-weighted averages are exact where int() truncation is not", () => {
  const meter = new MetricMeter();
  meter.update({ loss: 0.7, acc: 0.25 }, 3);
  meter.update({ loss: 0.2, acc: 1 }, 5);
  const averages = meter.averages();
  const expected = (0.7 * 3 + 0.2 * 5) / 8; // 0.3875
  ok(relativeError(averages.loss, expected) < 1e-15, `loss average ${averages.loss}, expected ${expected}`);
  ok(relativeError(averages.acc, 5.75 / 8) < 1e-15, `acc average ${averages.acc}`);
  // The official synchronize: int(sum) / count.
  const truncated = Math.trunc(0.7 * 3 + 0.2 * 5) / 8;
  ok(Math.abs(averages.loss - truncated) > 0.01, "the average must not be the truncated one");
  deepStrictEqual(meter.counts(), { loss: 8, acc: 8 });

  const small = new MetricMeter();
  for (let i = 0; i < 100; i++) small.update({ rec: 0.001 }, 64);
  ok(relativeError(small.averages().rec, 0.001) < 1e-13, `small metric average ${small.averages().rec}`);
});

Deno.test("MetricMeter: compensated sums keep a million small additions exact to 1e-15", () => {
  const meter = new MetricMeter();
  let naive = 0;
  for (let i = 0; i < 1_000_000; i++) {
    meter.update({ x: 0.1 });
    naive += 0.1;
  }
  const average = meter.averages().x;
  ok(relativeError(average, 0.1) < 1e-15, `average ${average}, relative error ${relativeError(average, 0.1)}`);
  // The same sum done naively is off by ~1e-11: the test would catch losing the compensation.
  ok(relativeError(naive / 1e6, 0.1) > 1e-13, "naive summation was expected to drift");
});

Deno.test("MetricMeter: merging ranks (directly or through a summed packed vector) equals one meter", () => {
  const all = new MetricMeter();
  const rank0 = new MetricMeter();
  const rank1 = new MetricMeter();
  const batches: [Record<string, number>, number, MetricMeter][] = [
    [{ loss: 3.25, clip: 1.5 }, 32, rank0],
    [{ loss: 2.75, clip: 1.25 }, 32, rank1],
    [{ loss: 2.5, clip: 1.0 }, 17, rank0],
    [{ loss: 2.0, clip: 0.5, extra: 4 }, 9, rank1],
  ];
  for (const [values, weight, rank] of batches) {
    all.update(values, weight);
    rank.update(values, weight);
  }
  const merged = new MetricMeter();
  merged.merge(rank0);
  merged.merge(rank1.snapshot());
  deepStrictEqual(merged.averages(), all.averages());

  // All-reduce simulation: every rank packs the same (union) names; the vectors are summed elementwise.
  const names = [...new Set([...rank0.snapshot().names, ...rank1.snapshot().names])].sort();
  const a = rank0.pack(names), b = rank1.pack(names);
  const reduced = a.map((v, i) => v + b[i]);
  deepStrictEqual(MetricMeter.unpack(names, reduced).averages(), all.averages());
  strictEqual(all.averages().extra, 4);

  all.reset();
  deepStrictEqual(all.averages(), {});
  throws(() => all.update({ loss: 1 }, -1), RangeError);
  throws(() => all.update({ loss: 1 }, Number.NaN), RangeError);
  throws(() => MetricMeter.unpack(["a"], [1, 2, 3]), RangeError);
  const zero = new MetricMeter();
  zero.update({ loss: 1 }, 0);
  ok(Number.isNaN(zero.averages().loss), "an average over zero weight is NaN, not 0");
});

// ---- JsonlWriter -------------------------------------------------------------------------------------------------

Deno.test("JsonlWriter: two writers append to one file; a torn line spoils only itself; rank 1 writes nothing", () => {
  const dir = Deno.makeTempDirSync({ prefix: "jsonl_test_" });
  try {
    const path = `${dir}/metrics.jsonl`;
    const first = new JsonlWriter(path, 0);
    first.write({ step: 1, loss: 9.5 });
    first.write({ step: 2, loss: Number.NaN, big: 3n });
    first.close();
    first.close(); // idempotent
    // A run killed in the middle of a line.
    Deno.writeTextFileSync(path, '{"step": 3, "lo', { append: true });
    const second = new JsonlWriter(path, 0);
    second.write({ step: 4, loss: 7.25 });
    second.close();
    const silent = new JsonlWriter(`${dir}/rank1.jsonl`, 1);
    silent.write({ step: 1 });
    silent.close();

    const { records, badLines } = readJsonl(path);
    deepStrictEqual(records, [{ step: 1, loss: 9.5 }, { step: 2, loss: null, big: 3 }, { step: 4, loss: 7.25 }]);
    strictEqual(badLines, 1);
    ok(Deno.readTextFileSync(path).endsWith("\n"));
    throws(() => Deno.statSync(`${dir}/rank1.jsonl`), Deno.errors.NotFound);
    throws(() => first.write({ step: 5 }), /write after close/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("JsonlWriter: resumeStep drops records logged after the resumed checkpoint", () => {
  const dir = Deno.makeTempDirSync({ prefix: "jsonl_test_" });
  try {
    const path = `${dir}/metrics.jsonl`;
    const killed = new JsonlWriter(path);
    for (const step of [10, 20, 30, 40]) killed.write({ type: "interval", step, loss: 10 - step / 10 });
    killed.write({ type: "note", text: "no step" });
    killed.close();
    const resumed = new JsonlWriter(path, 0, { resumeStep: 20 });
    resumed.write({ type: "interval", step: 30, loss: 6.5 });
    resumed.close();
    const steps = readJsonl(path).records.map((r) => r.step ?? r.type);
    deepStrictEqual(steps, [10, 20, "note", 30]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---- ProgressBar ---------------------------------------------------------------------------------------------------

Deno.test("ProgressBar plain mode: one line per update with terms, rate, images/s, ETA, 4 significant digits", () => {
  const lines: string[] = [];
  let now = 0;
  const bar = new ProgressBar({
    total: 2000,
    interactive: false,
    imagesPerStep: 32,
    log: (line) => lines.push(line),
    now: () => now,
  });
  now = 20_000;
  bar.update(60); // no terms: nothing printed
  now = 40_000;
  bar.update(120, { loss: 9.81234, clip: 1.02, rec: 0.000123456 });
  deepStrictEqual(lines, [
    "step 120/2000 (6.0%) | 3.00 it/s 96.0 img/s | eta 10m27s | loss 9.812 clip 1.020 rec 1.235e-4",
  ]);
  bar.finish(); // plain mode: nothing to end
  strictEqual(lines.length, 1);

  const resumed: string[] = [];
  now = 0;
  const after = new ProgressBar({
    total: 100,
    startStep: 90,
    interactive: false,
    log: (l) => resumed.push(l),
    now: () => now,
  });
  now = 5000;
  after.update(100, { loss: 1 });
  deepStrictEqual(resumed, ["step 100/100 (100.0%) | 2.00 it/s | eta 0s | loss 1.000"]);

  const quiet: string[] = [];
  const other = new ProgressBar({ total: 10, rank: 1, interactive: false, log: (l) => quiet.push(l) });
  other.update(5, { loss: 1 });
  other.println("hello");
  deepStrictEqual(quiet, []);
});

Deno.test("ProgressBar terminal mode: one rewritten line, at most every 100 ms, cut to the width", () => {
  const writes: string[] = [];
  const logged: string[] = [];
  let now = 0;
  const bar = new ProgressBar({
    total: 1000,
    interactive: true,
    columns: 80,
    write: (text) => writes.push(text),
    log: (line) => logged.push(line),
    now: () => now,
  });
  for (let step = 1; step <= 1000; step++) {
    now = step * 2; // 500 it/s: 2 s in all, so about 20 redraws
    bar.update(step, step % 100 === 0 ? { loss: 10 - step / 200, a_very_long_term_name: 123.456 } : undefined);
  }
  ok(writes.length >= 19 && writes.length <= 22, `${writes.length} redraws for 2 s of updates`);
  for (const w of writes) {
    ok(w.startsWith("\r") && w.endsWith("\x1b[K"), JSON.stringify(w));
    ok([...w.slice(1, -3)].length <= 79, `line longer than the terminal: ${JSON.stringify(w)}`);
  }
  const last = writes[writes.length - 1];
  ok(last.includes("100.0%") && last.includes("1000/1000") && last.includes("500 it/s"), last);
  bar.println("checkpoint: saved");
  deepStrictEqual(logged, ["checkpoint: saved"]);
  strictEqual(writes[writes.length - 2], "\r\x1b[K", "the bar is cleared before a line is printed");
  bar.finish();
  ok(writes[writes.length - 1].endsWith("\n"), "finish ends the line");
});

Deno.test("number and duration formats", () => {
  deepStrictEqual(
    [9.81234, 1.02, 0, 12345.6, 1234567, 0.000123456, Number.NaN, -Infinity].map((v) => significant(v, 4)),
    ["9.812", "1.020", "0.000", "12346", "1.235e+6", "1.235e-4", "nan", "-inf"],
  );
  deepStrictEqual([0, 45.4, 605, 3 * 3600 + 7 * 60, 2 * 86400 + 4 * 3600, Infinity].map(formatDuration), [
    "0s",
    "45s",
    "10m05s",
    "3h07m",
    "2d04h",
    "--",
  ]);
});

// ---- lossCurveSvg --------------------------------------------------------------------------------------------------

/** Checks that every element opened is closed in order (a well-formedness check without an XML parser). */
function assertBalancedTags(svg: string): void {
  const stack: string[] = [];
  for (const match of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
    const [, closing, name, selfClosing] = match;
    if (selfClosing) continue;
    if (closing) strictEqual(stack.pop(), name, `unbalanced </${name}>`);
    else stack.push(name);
  }
  deepStrictEqual(stack, [], "unclosed elements");
}

Deno.test("lossCurveSvg: one line per series, legend names, raw points under smoothing, gaps for bad values", () => {
  const points = (f: (i: number) => number, n: number): [number, number][] =>
    Array.from({ length: n }, (_, i) => [i + 1, f(i)]);
  const series = [
    { name: "loss", points: points((i) => 10 * Math.exp(-i / 50) + 1, 200) },
    { name: "clip & <ibot>", points: points((i) => (i === 50 ? Number.NaN : 3 * Math.exp(-i / 80) + 0.5), 200) },
    { name: "rec", points: points((i) => (i === 10 ? 0 : 1 / (1 + i)), 200) },
  ];
  const svg = lossCurveSvg(series, { title: "training loss", xLabel: "optimizer step", yLabel: "loss", logY: true });
  ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"));
  assertBalancedTags(svg);
  strictEqual([...svg.matchAll(/<path class="series"/g)].length, 3, "one line per series");
  strictEqual([...svg.matchAll(/<path class="raw"/g)].length, 3, "faint raw data under each smoothed line");
  for (const name of ["loss", "clip &amp; &lt;ibot&gt;", "rec"]) ok(svg.includes(`>${name}</text>`), `legend: ${name}`);
  ok(svg.includes("training loss") && svg.includes("optimizer step"), "title and axis label");
  ok(!svg.includes("NaN") && !svg.includes("Infinity"), "no non-finite coordinates");
  // The NaN and the zero (not drawable on a log axis) each break their line into two pieces.
  const clipPath = svg.match(/class="raw" d="([^"]*)"[^>]*stroke="#f28e2b"/)![1];
  strictEqual(clipPath.split("M").length - 1, 2, "a NaN leaves a gap");
  ok(/width="800" height="450"/.test(svg), "default size 800 × 450");

  const linear = lossCurveSvg([{ name: "loss", points: points((i) => 5 - i / 10, 30) }], {
    title: "t",
    xLabel: "x",
    yLabel: "y",
  });
  strictEqual([...linear.matchAll(/<path class="raw"/g)].length, 0, "30 points are drawn unsmoothed");
  strictEqual([...linear.matchAll(/<path class="series"/g)].length, 1);
  ok(/>0<\/text>/.test(linear) && />5<\/text>/.test(linear), "linear ticks at round values");

  const empty = lossCurveSvg([{ name: "loss", points: [[1, Number.NaN]] }], { title: "t", xLabel: "x", yLabel: "y" });
  ok(empty.includes("no finite data"));
  assertBalancedTags(empty);
  throws(() => lossCurveSvg(series, { title: "t", xLabel: "x", yLabel: "y", smoothing: 1 }), RangeError);
});
