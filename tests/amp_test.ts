// amp_test.ts: the fp16 grad scaler (src/train/amp.ts) on the CPU. Its rules by hand (growth after growthInterval
// finite steps, back-off on inf/nan, no growth to float32 infinity, the unscale that clipping must see), a skipped
// step leaving the parameters and the AdamW state untouched, a resume through a checkpoint file continuing exactly,
// and step by step against PyTorch's own torch.cuda.amp.GradScaler driving torch.optim.AdamW on the same inputs.
import { AdamW } from "../src/train/optimizer.ts";
import { autocastUnsupported, GradScaler } from "../src/train/amp.ts";
import { loadCheckpoint, saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { gradNorm, liveTensors, noGrad, Tensor, tidy, torchVersion } from "../src/torch/mod.ts";
import { assert, assertClose, assertEquals, assertThrows, pythonJson, uniformValues } from "./helpers.ts";
import { noTorch } from "./torch_reference.ts";

/** A test that must leave no native handle behind. */
function test(name: string, fn: () => void, options: { ignore?: boolean } = {}): void {
  Deno.test({
    name: `grad scaler: ${name}`,
    ignore: options.ignore ?? false,
    fn() {
      const before = liveTensors();
      fn();
      assertEquals(liveTensors(), before, "live handles after the test");
    },
  });
}

const SHAPES = [[3], [2, 2]];

function makeParams(seed: number): Tensor[] {
  return SHAPES.map((shape, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return Tensor.fromArray(uniformValues(n, seed + i), shape).requiresGrad_().keep();
  });
}

/** Sets each parameter's gradient to values[i] * scale, as backward of a scaled loss leaves it. */
function setScaledGrads(params: readonly Tensor[], values: readonly number[][], scale: number): void {
  tidy(() => params.forEach((p, i) => p.setGrad(Tensor.fromArray(values[i], p.shape).mul(scale))));
}

function grads(params: readonly Tensor[]): number[][] {
  return params.map((p) => {
    const g = p.grad!;
    try {
      return g.toArray();
    } finally {
      g.dispose();
    }
  });
}

/** One scaler step on gradients `values` (scaled by the current scale): returns whether the optimizer may step. */
function scalerStep(scaler: GradScaler, params: readonly Tensor[], values: readonly number[][]): boolean {
  setScaledGrads(params, values, scaler.scale);
  const ok = scaler.unscaleAndUpdate(params);
  for (const p of params) p.zeroGrad(true);
  return ok;
}

const FINITE = [[0.5, -1, 2], [0.25, 1, -3, 4]];
const WITH_INF = [[0.5, -1, 2], [0.25, Infinity, -3, 4]];
const WITH_NEG_INF = [[-Infinity, -1, 2], [0.25, 1, -3, 4]];
const WITH_NAN = [[0.5, NaN, 2], [0.25, 1, -3, 4]];

test("grows by growthFactor after growthInterval finite steps, and only then", () => {
  const params = makeParams(1);
  const scaler = new GradScaler({ initScale: 1024, growthInterval: 3 });
  try {
    const seen: [boolean, number, number][] = [];
    for (let i = 0; i < 7; i++) seen.push([scalerStep(scaler, params, FINITE), scaler.scale, scaler.growthTracker]);
    assertEquals(seen, [
      [true, 1024, 1],
      [true, 1024, 2],
      [true, 2048, 0],
      [true, 2048, 1],
      [true, 2048, 2],
      [true, 4096, 0],
      [true, 4096, 1],
    ]);
  } finally {
    scaler.dispose();
    for (const p of params) p.dispose();
  }
});

test("backs off by backoffFactor on inf, -inf or NaN, resets the tracker and asks to skip the step", () => {
  const params = makeParams(2);
  const scaler = new GradScaler({ initScale: 2 ** 16, growthInterval: 3 });
  try {
    const steps = [FINITE, FINITE, WITH_INF, FINITE, WITH_NAN, WITH_NEG_INF, FINITE, FINITE, FINITE];
    const seen = steps.map((g) => [scalerStep(scaler, params, g), scaler.scale, scaler.growthTracker]);
    assertEquals(seen, [
      [true, 2 ** 16, 1],
      [true, 2 ** 16, 2],
      [false, 2 ** 15, 0], // two clean steps, then an inf: the tracker restarts, so no growth at the next clean one
      [true, 2 ** 15, 1],
      [false, 2 ** 14, 0],
      [false, 2 ** 13, 0],
      [true, 2 ** 13, 1],
      [true, 2 ** 13, 2],
      [true, 2 ** 14, 0],
    ]);
  } finally {
    scaler.dispose();
    for (const p of params) p.dispose();
  }
});

test("the scale is a float32 that never grows to float32 infinity (as PyTorch's _amp_update_scale_)", () => {
  const params = makeParams(3);
  const top = new GradScaler({ initScale: 2 ** 126, growthInterval: 1 });
  const odd = new GradScaler({ initScale: 1000, growthFactor: 1.7, backoffFactor: 0.37, growthInterval: 1 });
  try {
    const small = FINITE.map((row) => row.map((v) => v / 16)); // scaled by 2^127 still finite in float32
    const tops = [0, 1, 2].map(() => (scalerStep(top, params, small), top.scale));
    assertEquals(tops, [2 ** 127, 2 ** 127, 2 ** 127], "growth stops at the largest power of two below float32 max");
    assertEquals(top.growthTracker, 0, "the tracker still restarts when the growth is refused");
    let expected = Math.fround(1000);
    for (const g of [FINITE, FINITE, WITH_INF, FINITE, WITH_NAN]) {
      const ok = scalerStep(odd, params, g);
      expected = Math.fround(expected * (ok ? 1.7 : 0.37));
      assertEquals(odd.scale, expected, "each update rounds to float32");
    }
  } finally {
    top.dispose();
    odd.dispose();
    for (const p of params) p.dispose();
  }
});

test("unscaling happens before anything reads the gradients: clipping sees the true norm", () => {
  const params = makeParams(4);
  const scaler = new GradScaler({ initScale: 2 ** 20 });
  try {
    setScaledGrads(params, FINITE, scaler.scale);
    assert(scaler.unscaleAndUpdate(params), "finite gradients");
    assertEquals(grads(params), FINITE, "the gradients divided by the scale (a power of two: exactly)");
    const trueNorm = Math.hypot(...FINITE.flat());
    const norm = tidy(() => gradNorm(params).item());
    assertClose(norm, trueNorm, { rtol: 1e-6, message: "the norm a clip_grad_norm_ after the unscale sees" });
    // clip_grad_norm_(max_norm=1) after the unscale scales by 1 / (norm + 1e-6); before it, by ~2^-20 more.
    tidy(() =>
      noGrad(() => {
        const coef = gradNorm(params).add(1e-6).reciprocal().mul(1).clamp(-Infinity, 1);
        for (const p of params) p.grad!.mul_(coef);
      })
    );
    const clipped = grads(params);
    assertClose(clipped.flat(), FINITE.flat().map((v) => v / (trueNorm + 1e-6)), { rtol: 1e-6 });
    // Parameters without a gradient (frozen, or unused this step) are ignored, not an error.
    const frozen = Tensor.fromArray([1, 2], [2]).requiresGrad_().keep();
    try {
      setScaledGrads(params, FINITE, scaler.scale);
      assert(scaler.unscaleAndUpdate([...params, frozen]), "a parameter without a gradient");
      assertEquals(frozen.grad, null);
    } finally {
      frozen.dispose();
    }
  } finally {
    scaler.dispose();
    for (const p of params) p.dispose();
  }
});

test("a skipped step leaves the parameters and the AdamW state (moments, step count) bit for bit unchanged", () => {
  const params = makeParams(5);
  const optimizer = new AdamW([{ name: "all", params: params.map((p, i) => [`p${i}`, p]), weightDecay: 0.1 }], {
    betas: [0.9, 0.98],
    eps: 1e-8,
  });
  const scaler = new GradScaler({ initScale: 2 ** 10 });
  // The training loop's order (src/train/loop.ts): unscale and update the scaler, step only when it says so.
  const loopStep = (values: number[][]): boolean => {
    setScaledGrads(params, values, scaler.scale);
    const ok = scaler.unscaleAndUpdate(params);
    if (ok) optimizer.step(1e-2);
    optimizer.zeroGrad();
    return ok;
  };
  const snapshot = (): { params: number[][]; state: Record<string, number[]>; steps: number } => ({
    params: params.map((p) => p.toArray()),
    state: Object.fromEntries([...optimizer.stateTensors()].map(([k, t]) => [k, t.toArray()])),
    steps: optimizer.stepCount,
  });
  try {
    assert(loopStep(FINITE), "first step");
    const before = snapshot();
    assertEquals(before.steps, 1);
    for (const bad of [WITH_INF, WITH_NAN, WITH_NEG_INF]) {
      assert(!loopStep(bad), "skipped");
      assertEquals(snapshot(), before, "after a skipped step");
    }
    assertEquals(scaler.scale, 2 ** 7, "three back-offs");
    assert(loopStep(FINITE), "the next clean step");
    const after = snapshot();
    assertEquals(after.steps, 2, "the skipped steps are not counted (bias correction as PyTorch)");
    assert(after.params.flat().some((v, i) => v !== before.params.flat()[i]), "the clean step moves the parameters");
  } finally {
    scaler.dispose();
    optimizer.dispose();
    for (const p of params) p.dispose();
  }
});

test("state() through a checkpoint file resumes exactly where an uninterrupted scaler is", () => {
  const params = makeParams(6);
  const steps = [FINITE, FINITE, WITH_INF, FINITE, FINITE, FINITE, WITH_NAN, FINITE, FINITE, FINITE];
  const options = { initScale: 3000, growthFactor: 1.5, backoffFactor: 0.4, growthInterval: 2 };
  const dir = Deno.makeTempDirSync({ prefix: "dc_amp_test_" });
  const whole = new GradScaler(options);
  const first = new GradScaler(options);
  const resumed = new GradScaler(options);
  try {
    const expected = steps.map((g) => [scalerStep(whole, params, g), whole.scale, whole.growthTracker]);
    const got = steps.slice(0, 4).map((g) => [scalerStep(first, params, g), first.scale, first.growthTracker]);
    assertEquals(first.state(), { scale: 3000 * 1.5 * 0.4, growthTracker: 1 }, "state after 4 steps");
    // The training loop keeps the scaler's state in the checkpoint's meta (JSON).
    const tensors = new Map([["model.w", Tensor.zeros([1])]]);
    const path = saveCheckpoint(dir, { tensors, meta: { step: 4, scaler: first.state() } });
    tensors.get("model.w")!.dispose();
    const loaded = loadCheckpoint(path);
    for (const t of loaded.tensors.values()) t.dispose();
    resumed.load(loaded.meta.scaler as { scale: number; growthTracker: number });
    got.push(...steps.slice(4).map((g) => [scalerStep(resumed, params, g), resumed.scale, resumed.growthTracker]));
    assertEquals(got, expected, "(ok, scale, tracker) per step, resumed after step 4 vs uninterrupted");
  } finally {
    for (const s of [whole, first, resumed]) s.dispose();
    for (const p of params) p.dispose();
    Deno.removeSync(dir, { recursive: true });
  }
});

test("invalid factors and scales are refused as PyTorch refuses them", () => {
  assertThrows(() => new GradScaler({ growthFactor: 1 }), RangeError, ["growthFactor 1"]);
  assertThrows(() => new GradScaler({ backoffFactor: 1 }), RangeError, ["backoffFactor 1"]);
  assertThrows(() => new GradScaler({ growthInterval: 0 }), RangeError, ["growthInterval 0"]);
  assertThrows(() => new GradScaler({ initScale: 0 }), RangeError, ["initScale 0"]);
  assertThrows(() => new GradScaler({ initScale: 1e39 }), RangeError, ["initScale 1e+39"]);
});

// ---- against PyTorch's GradScaler --------------------------------------------------------------------------------

// torch 1.13's torch.cuda.amp.GradScaler is CUDA-only in three places that have nothing to do with its logic: it
// disables itself when CUDA is unavailable (patched), asserts that tensors are CUDA tensors (`python3 -O` drops
// asserts), and calls two ops with CUDA kernels only. Those two are written here as PyTorch computes them (the CPU
// kernels of torch 2.x, AmpGradScalerKernels.cpp, follow the CUDA ones): everything else (scale(), unscale_ per
// optimizer, step() skipping on a recorded inf, update(), state_dict()) is PyTorch's own code, as is the
// clip_grad_norm_ between unscale_ and step and the AdamW it drives.
const PY_SCALER = `
import json, sys, torch
torch.cuda.is_available = lambda: True

def non_finite_check_and_unscale_(grads, found_inf, inv_scale):
    for g in grads:
        if not bool(torch.isfinite(g).all()):
            found_inf.fill_(1.0)
        if inv_scale.item() != 1.0:
            g.mul_(inv_scale)

def update_scale_(scale, tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    if found_inf.item():
        scale.fill_(scale.item() * backoff_factor)  # float * double, stored as float
        tracker.fill_(0)
    else:
        successful = int(tracker.item()) + 1
        if successful == growth_interval:
            grown = torch.tensor(scale.item() * growth_factor, dtype=torch.float32)
            if bool(torch.isfinite(grown)):  # do not grow the scale past fp32 bounds to inf
                scale.copy_(grown)
            tracker.fill_(0)
        else:
            tracker.fill_(successful)
    return scale

torch._amp_foreach_non_finite_check_and_unscale_ = non_finite_check_and_unscale_
torch._amp_update_scale_ = update_scale_

d = json.loads(sys.stdin.read())
params = [torch.tensor(p["values"], dtype=torch.float32).reshape(p["shape"]).requires_grad_() for p in d["params"]]
opt = torch.optim.AdamW(params, lr=d["lr"], betas=tuple(d["betas"]), eps=d["eps"], weight_decay=d["wd"])
scaler = torch.cuda.amp.GradScaler(**d["scaler"])
if not scaler.is_enabled():
    sys.exit("GradScaler disabled itself")
out = []
for coefs in d["steps"]:
    loss = sum((p * torch.tensor([float(v) for v in c], dtype=torch.float32).reshape(p.shape)).sum()
               for p, c in zip(params, coefs))
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    if d["max_norm"] is not None:
        torch.nn.utils.clip_grad_norm_(params, d["max_norm"])
    grads = [p.grad.flatten().tolist() for p in params]
    skipped = not all(bool(torch.isfinite(p.grad).all()) for p in params)
    scaler.step(opt)
    scaler.update()
    state = opt.state[params[0]]
    out.append({
        "scale": scaler.get_scale(),
        "tracker": scaler._get_growth_tracker(),
        "skipped": skipped,
        "grads": None if skipped else grads,
        "params": [p.detach().flatten().tolist() for p in params],
        "exp_avg": [opt.state[p]["exp_avg"].flatten().tolist() for p in params] if state else None,
        "optimizer_steps": int(state["step"]) if state else 0,
    })
    opt.zero_grad(set_to_none=True)
print(json.dumps({"steps": out, "state_dict": scaler.state_dict()}))
`;

interface ReferenceStep {
  scale: number;
  tracker: number;
  skipped: boolean;
  grads: number[][] | null;
  params: number[][];
  exp_avg: number[][] | null;
  optimizer_steps: number;
}

interface Case {
  scaler: { init_scale: number; growth_factor: number; backoff_factor: number; growth_interval: number };
  maxNorm: number | null;
  steps: (number | string)[][][]; // per step, per parameter: coefficients; "inf", "-inf", "nan" for non-finite
}

async function reference(
  c: Case,
  params: number[][],
): Promise<{ steps: ReferenceStep[]; state_dict: Record<string, number> }> {
  const input = {
    params: params.map((values, i) => ({ values, shape: SHAPES[i] })),
    lr: 1e-2,
    betas: [0.9, 0.98],
    eps: 1e-8,
    wd: 0.1,
    scaler: c.scaler,
    max_norm: c.maxNorm,
    steps: c.steps,
  };
  return await pythonJson(["-O", "-c", PY_SCALER], input, "PyTorch's GradScaler") as {
    steps: ReferenceStep[];
    state_dict: Record<string, number>;
  };
}

function ours(c: Case, initial: number[][]): ReferenceStep[] {
  const params = initial.map((values, i) => Tensor.fromArray(values, SHAPES[i]).requiresGrad_().keep());
  const optimizer = new AdamW([{ name: "all", params: params.map((p, i) => [`p${i}`, p]), weightDecay: 0.1 }], {
    betas: [0.9, 0.98],
    eps: 1e-8,
  });
  const scaler = new GradScaler({
    initScale: c.scaler.init_scale,
    growthFactor: c.scaler.growth_factor,
    backoffFactor: c.scaler.backoff_factor,
    growthInterval: c.scaler.growth_interval,
  });
  try {
    return c.steps.map((coefs) => {
      tidy(() => {
        const terms = params.map((p, i) => p.mul(Tensor.fromArray(coefs[i].map(Number), p.shape)).sum());
        const loss = terms.reduce((a, b) => a.add(b));
        loss.mul(scaler.scale).backward();
      });
      const ok = scaler.unscaleAndUpdate(params);
      if (c.maxNorm !== null) {
        const maxNorm = c.maxNorm;
        tidy(() =>
          noGrad(() => {
            // torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6), clamped to 1, times every gradient.
            const coef = gradNorm(params).add(1e-6).reciprocal().mul(maxNorm).clamp(-Infinity, 1);
            for (const p of params) p.grad!.mul_(coef);
          })
        );
      }
      const stepGrads = ok ? grads(params) : null;
      if (ok) optimizer.step(1e-2);
      optimizer.zeroGrad();
      const state = optimizer.stateTensors();
      return {
        scale: scaler.scale,
        tracker: scaler.growthTracker,
        skipped: !ok,
        grads: stepGrads,
        params: params.map((p) => p.toArray()),
        exp_avg: optimizer.stepCount > 0 ? params.map((_, i) => state.get(`p${i}.exp_avg`)!.toArray()) : null,
        optimizer_steps: optimizer.stepCount,
      };
    });
  } finally {
    scaler.dispose();
    optimizer.dispose();
    for (const p of params) p.dispose();
  }
}

/** Coefficients for step `i`: uniform in [-range, range), with `special` put into one element when given. */
function coefficients(i: number, range: number, special?: string): (number | string)[][] {
  const rows: (number | string)[][] = SHAPES.map((shape, j) =>
    uniformValues(shape.reduce((a, b) => a * b, 1), 100 + 10 * i + j, -range, range)
  );
  if (special !== undefined) rows[i % 2][i % 3] = special;
  return rows;
}

const PATTERN = [undefined, undefined, "inf", undefined, "nan", undefined, undefined, "-inf", undefined, undefined];
const CASES: [string, Case][] = [
  ["powers of two, clipping to norm 1 after the unscale", {
    scaler: { init_scale: 2 ** 10, growth_factor: 2, backoff_factor: 0.5, growth_interval: 2 },
    maxNorm: 1,
    steps: PATTERN.map((s, i) => coefficients(i, 2, s)),
  }],
  ["odd factors (float32 rounding of the scale), no clipping", {
    scaler: { init_scale: 1000, growth_factor: 1.7, backoff_factor: 0.37, growth_interval: 2 },
    maxNorm: null,
    steps: PATTERN.map((s, i) => coefficients(i, 2, s)),
  }],
  ["growth refused at float32's top", {
    scaler: { init_scale: 2 ** 126, growth_factor: 2, backoff_factor: 0.5, growth_interval: 1 },
    maxNorm: null,
    steps: [0, 1, 2, 3].map((i) => coefficients(i, 0.25)),
  }],
];

for (const [name, c] of CASES) {
  Deno.test({
    name: `grad scaler: equals PyTorch's GradScaler + clip_grad_norm_ + AdamW step by step: ${name}`,
    ignore: noTorch,
    async fn() {
      const initial = SHAPES.map((shape, i) => uniformValues(shape.reduce((a, b) => a * b, 1), 50 + i));
      const expected = await reference(c, initial);
      const before = liveTensors();
      const got = ours(c, initial);
      assertEquals(liveTensors(), before, "live handles");
      assertEquals(got.length, expected.steps.length);
      got.forEach((g, i) => {
        const e = expected.steps[i];
        const at = `step ${i + 1}`;
        assertEquals(
          [g.skipped, g.scale, g.tracker],
          [e.skipped, e.scale, e.tracker],
          `${at}: skipped, scale, tracker`,
        );
        assertEquals(g.optimizer_steps, e.optimizer_steps, `${at}: optimizer steps`);
        if (e.grads !== null) {
          assertClose(g.grads!.flat(), e.grads.flat(), { rtol: 1e-6, atol: 1e-7, message: `${at} grads` });
        }
        assertClose(g.params.flat(), e.params.flat(), { rtol: 1e-5, atol: 1e-7, message: `${at}: parameters` });
        if (e.exp_avg !== null) {
          assertClose(g.exp_avg!.flat(), e.exp_avg.flat(), { rtol: 1e-5, atol: 1e-8, message: `${at}: exp_avg` });
        }
      });
      // The official checkpoints' "scaler" entry is this state_dict; src/checkpoint/official_checkpoint.ts reads its
      // "scale" and "_growth_tracker".
      const last = got[got.length - 1];
      assertEquals(expected.state_dict.scale, last.scale, "state_dict scale");
      assertEquals(expected.state_dict._growth_tracker, last.tracker, "state_dict _growth_tracker");
      assert(got.some((g) => g.skipped) === c.steps.some((row) => row.flat().some((v) => typeof v === "string")));
    },
  });
}

Deno.test("autocastUnsupported: bf16 on the CPU works; a refused precision is a reason and leaves autocast off", () => {
  assertEquals(autocastUnsupported("cpu", "fp32"), null);
  assertEquals(autocastUnsupported("cpu", "bf16"), null);
  const fp16 = autocastUnsupported("cpu", "fp16");
  if (torchVersion().startsWith("1.13")) {
    assert(fp16 !== null && fp16.includes("Bfloat16"), `libtorch 1.13's CPU autocast is bf16 only: ${fp16}`);
  }
  tidy(() => {
    const a = Tensor.ones([2, 2]);
    assertEquals(a.matmul(a).dtype, "float32", "autocast is off again after the refused dtype");
  });
});
