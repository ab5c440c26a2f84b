// losses_test.ts: the DetailCLIP losses (src/losses/) against the golden step the official code produced (every
// logged metric and the iBOT centers after the update), against closed forms computed here in JS (float64), and
// against finite differences; plus the invariants the training loop relies on: teacher inputs get no gradient,
// kept patches get no pixel or patch gradient, and the removed-positions-only iBOT path equals the full one.
// Every test checks that it left no native handle behind.
import {
  clipLoss,
  detailClipLoss,
  type DetailClipLossInputs,
  IBOTLoss,
  patchify,
  reconstructionLoss,
  type ReconstructionLossOptions,
} from "../src/losses/mod.ts";
import { cat, liveTensors, noGrad, SafeTensorsFile, Tensor, tidy } from "../src/torch/mod.ts";
import { assert, assertClose, assertEquals, assertThrows, GOLDEN_DIR, uniformValues } from "./helpers.ts";

const GOLDEN = GOLDEN_DIR;
/** golden/README.md: forward outputs and losses within 1e-4 relative (or 1e-5 absolute near zero). */
const GOLDEN_TOL = { rtol: 1e-4, atol: 1e-5 };

function test(name: string, fn: () => void): void {
  Deno.test(name, () => {
    const before = liveTensors();
    tidy(fn);
    assertEquals(liveTensors(), before, `${name}: live tensor handles after the scope`);
  });
}

// ---- JS references (float64) --------------------------------------------------------------------------------------

type Matrix = number[][];

function toMatrix(flat: number[], cols: number): Matrix {
  return Array.from({ length: flat.length / cols }, (_, i) => flat.slice(i * cols, (i + 1) * cols));
}

function normalizeRows(m: Matrix): Matrix {
  return m.map((row) => {
    const norm = Math.max(Math.hypot(...row), 1e-12);
    return row.map((x) => x / norm);
  });
}

function logSoftmax(row: number[]): number[] {
  const max = Math.max(...row);
  const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
  return row.map((x) => x - lse);
}

function softmax(row: number[]): number[] {
  return logSoftmax(row).map(Math.exp);
}

/** Mean over rows of -log softmax(logits)[label]. */
function crossEntropy(logits: Matrix, labels: number[]): number {
  return logits.reduce((s, row, i) => s - logSoftmax(row)[labels[i]], 0) / logits.length;
}

/** (s · a) bᵀ. */
function scaledProducts(s: number, a: Matrix, b: Matrix): Matrix {
  return a.map((x) => b.map((y) => x.reduce((acc, xi, k) => acc + s * xi * y[k], 0)));
}

function clipReference(imageU: Matrix, imageV: Matrix, text: Matrix, s: number, extra?: {
  imageU: Matrix;
  imageV: Matrix;
  text: Matrix;
  rank: number;
}): { lossU: number; lossV: number; accuracy: number } {
  const [iu, iv, t] = [normalizeRows(imageU), normalizeRows(imageV), normalizeRows(text)];
  // Other ranks' rows (already normalised, as they would arrive from the gather), placed in rank order.
  const rank = extra?.rank ?? 0;
  const place = (local: Matrix, other: Matrix | undefined): Matrix =>
    other === undefined ? local : rank === 0 ? [...local, ...other] : [...other, ...local];
  const tAll = place(t, extra?.text), iuAll = place(iu, extra?.imageU), ivAll = place(iv, extra?.imageV);
  const labels = t.map((_, b) => rank * t.length + b);
  const view = (image: Matrix, imageAll: Matrix): number =>
    (crossEntropy(scaledProducts(s, image, tAll), labels) + crossEntropy(scaledProducts(s, t, imageAll), labels)) / 2;
  const logitsV = scaledProducts(s, iv, tAll);
  const correct = logitsV.filter((row, b) => row.indexOf(Math.max(...row)) === labels[b]).length;
  return { lossU: view(iu, iuAll), lossV: view(iv, ivAll), accuracy: (100 * correct) / t.length };
}

// ---- golden step ---------------------------------------------------------------------------------------------------

interface Golden {
  meta: {
    losses: Record<string, number>;
    teacher_temp_cls: number;
    teacher_temp_patch: number;
    student_temp: number;
    center_momentum: number;
    hyper: { out_dim: number; batch: number };
  };
  out: (name: string) => Tensor;
  input: (name: string) => Tensor;
}

function withGolden(fn: (golden: Golden) => void): void {
  const meta = JSON.parse(Deno.readTextFileSync(`${GOLDEN}/meta.json`));
  using outputs = SafeTensorsFile.open(`${GOLDEN}/outputs.safetensors`);
  using inputs = SafeTensorsFile.open(`${GOLDEN}/inputs.safetensors`);
  fn({ meta, out: (name) => outputs.tensor(name), input: (name) => inputs.tensor(name) });
}

function goldenIBOT(golden: Golden): IBOTLoss {
  const { meta } = golden;
  const k = meta.hyper.out_dim;
  return new IBOTLoss({
    outDim: k,
    patchOutDim: k,
    studentTemp: meta.student_temp,
    teacherTempCls: meta.teacher_temp_cls,
    centerMomentum: meta.center_momentum,
    centerMomentum2: meta.center_momentum,
  });
}

/** The official forward outputs of the golden step, under the names our model's DetailClipOutputs uses. */
function goldenModelOutputs(out: (name: string) => Tensor): DetailClipLossInputs {
  return {
    imageEmbedU: out("img_embed_u"),
    imageEmbedV: out("img_embed_v"),
    textEmbed: out("text_embed"),
    logitScale: out("logit_scale"),
    teacherCls: out("teacher_ibot_cls"),
    teacherPatch: out("teacher_ibot_patch"),
    studentCls: out("student_ibot_cls"),
    studentPatch: out("student_ibot_patch"),
    reconstructionU: out("u_s_reconstructed"),
    reconstructionV: out("v_s_reconstructed"),
    maskU: out("mask_u"),
    maskV: out("mask_v"),
  };
}

/** (2B, R) removed patch indices in raster order, from (2B, N) masks with the same count per row. */
function removedIdsOf(masks: Tensor): Tensor {
  const removed = masks.sum(1).toArray();
  assert(removed.every((r) => r === removed[0]), `every image must remove the same count, got ${removed}`);
  const order = masks.logicalNot().long().argsort(1, { stable: true }); // (2B, N): removed first, ascending
  return order.narrow(1, 0, removed[0]);
}

test("golden: CLIP losses and clip_acc", () => {
  withGolden(({ meta, out }) => {
    const result = clipLoss({
      imageU: out("img_embed_u"),
      imageV: out("img_embed_v"),
      text: out("text_embed"),
      logitScale: out("logit_scale"),
    });
    assertClose(result.lossU.item(), meta.losses.contra_loss_1, { ...GOLDEN_TOL, message: "contra_loss_1" });
    assertClose(result.lossV.item(), meta.losses.contra_loss_2, { ...GOLDEN_TOL, message: "contra_loss_2" });
    assertClose(result.accuracy.item(), meta.losses.clip_acc, { ...GOLDEN_TOL, message: "clip_acc" });
    const clip = (meta.losses.contra_loss_1 + meta.losses.contra_loss_2) / 2;
    assertClose(result.loss.item(), clip, { ...GOLDEN_TOL, message: "CLIP loss" });
    assertEquals(result.accuracy.dtype, "float32", "clip_acc dtype");
  });
});

test("golden: iBOT losses at epoch 0 and the centers after the update", () => {
  withGolden((golden) => {
    const { meta, out } = golden;
    const ibot = goldenIBOT(golden);
    try {
      assertEquals(ibot.teacherTempPatch(0), meta.teacher_temp_patch, "epoch-0 patch temperature");
      assertEquals(ibot.center.toArray(), new Array(meta.hyper.out_dim).fill(0), "centers start at zero");
      const masks = cat([out("mask_u"), out("mask_v")], 0);
      const result = ibot.forward({
        studentCls: out("student_ibot_cls"),
        studentPatch: out("student_ibot_patch"),
        teacherCls: out("teacher_ibot_cls"),
        teacherPatch: out("teacher_ibot_patch"),
        masks,
      }, 0);
      assertClose(result.cls.item(), meta.losses.ibot_cls_loss, { ...GOLDEN_TOL, message: "ibot_cls_loss" });
      assertClose(result.patch.item(), meta.losses.ibot_patch_loss, { ...GOLDEN_TOL, message: "ibot_patch_loss" });
      assertClose(result.total.item(), meta.losses.ibot_loss, { ...GOLDEN_TOL, message: "ibot_loss" });
      assertEquals(ibot.center.shape, [1, meta.hyper.out_dim], "center shape");
      assertEquals(ibot.center2.shape, [1, 1, meta.hyper.out_dim], "center2 shape");
      assertClose(ibot.center.toArray(), out("ibot_center_after").toArray(), { ...GOLDEN_TOL, message: "center" });
      assertClose(ibot.center2.toArray(), out("ibot_center2_after").toArray(), { ...GOLDEN_TOL, message: "center2" });
    } finally {
      ibot.dispose();
    }
  });
});

test("golden: the removed-positions-only iBOT path gives the same losses and centers", () => {
  withGolden((golden) => {
    const { meta, out } = golden;
    const ibot = goldenIBOT(golden);
    try {
      const masks = cat([out("mask_u"), out("mask_v")], 0); // (2B, N)
      const removedIds = removedIdsOf(masks); // (2B, 96)
      const full = out("student_ibot_patch"); // (2B, N, K)
      const index = removedIds.unsqueeze(-1).expand([removedIds.size(0), removedIds.size(1), full.size(2)]);
      const result = ibot.forward({
        studentCls: out("student_ibot_cls"),
        studentPatch: full.gather(1, index), // (2B, 96, K)
        teacherCls: out("teacher_ibot_cls"),
        teacherPatch: out("teacher_ibot_patch"),
        masks,
        removedIds,
      }, 0);
      assertClose(result.patch.item(), meta.losses.ibot_patch_loss, { ...GOLDEN_TOL, message: "ibot_patch_loss" });
      assertClose(result.cls.item(), meta.losses.ibot_cls_loss, { ...GOLDEN_TOL, message: "ibot_cls_loss" });
      assertClose(ibot.center2.toArray(), out("ibot_center2_after").toArray(), { ...GOLDEN_TOL, message: "center2" });
    } finally {
      ibot.dispose();
    }
  });
});

test("golden: reconstruction loss (patch 16, norm_pix)", () => {
  withGolden(({ meta, out, input }) => {
    const options: ReconstructionLossOptions = { patch: 16 };
    const lossU = reconstructionLoss(out("u_s_reconstructed"), input("u"), out("mask_u"), options);
    const lossV = reconstructionLoss(out("v_s_reconstructed"), input("v"), out("mask_v"), options);
    const reconst = lossU.add(lossV).mul(0.5).item();
    assertClose(reconst, meta.losses.reconst_loss, { ...GOLDEN_TOL, message: "reconst_loss" });
  });
});

test("golden: detailClipLoss reproduces every logged metric", () => {
  withGolden((golden) => {
    const { meta, out, input } = golden;
    const ibot = goldenIBOT(golden);
    try {
      const result = detailClipLoss(goldenModelOutputs(out), { u: input("u"), v: input("v") }, ibot, 0, {
        patchSize: 16,
      });
      const names = Object.keys(result);
      assertEquals(names, [
        "loss",
        "reconst_loss",
        "ibot_patch_loss",
        "ibot_cls_loss",
        "ibot_loss",
        "contra_loss_1",
        "contra_loss_2",
        "clip_acc",
      ], "metric names in the official order");
      let worst = "", worstRel = 0;
      for (const name of names) {
        const got = result[name as keyof typeof result];
        assertEquals(got.shape, [], `${name} is 0-d`);
        const value = got.item();
        assertClose(value, meta.losses[name], { ...GOLDEN_TOL, message: name });
        assertClose(value, out(`loss.${name}`).item(), { ...GOLDEN_TOL, message: `${name} (outputs file)` });
        const rel = Math.abs(value - meta.losses[name]) / Math.max(Math.abs(meta.losses[name]), 1e-12);
        if (rel >= worstRel) [worst, worstRel] = [name, rel];
      }
      console.log(`golden losses: worst relative difference ${worstRel.toExponential(2)} (${worst})`);
      assertClose(ibot.center.toArray(), out("ibot_center_after").toArray(), { ...GOLDEN_TOL, message: "center" });
    } finally {
      ibot.dispose();
    }
  });
});

// ---- CLIP: closed forms ---------------------------------------------------------------------------------------------

test("CLIP loss of a 2-sample batch equals the JS closed form", () => {
  const imageU = [[1, 0, 0], [0.2, 1, 0]];
  // v view: image 0 matches caption 0 best, image 1 also matches caption 0 best, so clip_acc is 50.
  const imageV = [[0.5, 0.5, 0], [1, 0, 0.2]];
  const text = [[1, 0.1, 0], [0, 1, 0.3]];
  const s = 2.5;
  const expected = clipReference(imageU, imageV, text, s);
  const result = clipLoss({
    imageU: Tensor.fromArray(imageU.flat(), [2, 3], { dtype: "float64" }),
    imageV: Tensor.fromArray(imageV.flat(), [2, 3], { dtype: "float64" }),
    text: Tensor.fromArray(text.flat(), [2, 3], { dtype: "float64" }),
    logitScale: Tensor.scalar(s, { dtype: "float64" }),
  });
  const tol = { rtol: 1e-12, atol: 0 };
  assertClose(result.lossU.item(), expected.lossU, { ...tol, message: "L_u" });
  assertClose(result.lossV.item(), expected.lossV, { ...tol, message: "L_v" });
  assertClose(result.loss.item(), (expected.lossU + expected.lossV) / 2, { ...tol, message: "loss" });
  assertEquals(expected.accuracy, 50, "the reference's clip_acc");
  assertEquals(result.accuracy.item(), 50, "clip_acc");
});

test("CLIP loss with a 2-rank gather: labels are rank·B + b and rows come in rank order", () => {
  const local = { imageU: uniformValues(6, 1), imageV: uniformValues(6, 2), text: uniformValues(6, 3) };
  const other = {
    imageU: normalizeRows(toMatrix(uniformValues(6, 4), 3)),
    imageV: normalizeRows(toMatrix(uniformValues(6, 5), 3)),
    text: normalizeRows(toMatrix(uniformValues(6, 6), 3)),
  };
  const s = 7.5;
  for (const rank of [0, 1]) {
    // The fake gather adds the other rank's rows, in the order the loss gathers: image u, image v, text.
    const others = [other.imageU, other.imageV, other.text];
    let call = 0;
    const gather = (t: Tensor): Tensor => {
      const rows = Tensor.fromArray(others[call++].flat(), [2, 3], { dtype: "float64" });
      return rank === 0 ? cat([t, rows], 0) : cat([rows, t], 0);
    };
    const result = clipLoss({
      imageU: Tensor.fromArray(local.imageU, [2, 3], { dtype: "float64" }),
      imageV: Tensor.fromArray(local.imageV, [2, 3], { dtype: "float64" }),
      text: Tensor.fromArray(local.text, [2, 3], { dtype: "float64" }),
      logitScale: Tensor.scalar(s, { dtype: "float64" }),
    }, { gather, rank });
    assertEquals(call, 3, "gather is called for image u, image v and text");
    const expected = clipReference(toMatrix(local.imageU, 3), toMatrix(local.imageV, 3), toMatrix(local.text, 3), s, {
      ...other,
      rank,
    });
    assertClose(result.lossU.item(), expected.lossU, { rtol: 1e-12, atol: 0, message: `rank ${rank} L_u` });
    assertClose(result.lossV.item(), expected.lossV, { rtol: 1e-12, atol: 0, message: `rank ${rank} L_v` });
    assertEquals(result.accuracy.item(), expected.accuracy, `rank ${rank} clip_acc`);
  }
});

test("CLIP gradients: finite differences for the embeddings and the logit scale", () => {
  const values = { imageU: uniformValues(8, 11), imageV: uniformValues(8, 12), text: uniformValues(8, 13) };
  const s0 = 3.0;
  const make = (delta: { name?: string; index?: number; h?: number } = {}) => {
    const tensor = (name: keyof typeof values): Tensor => {
      const data = values[name].slice();
      if (delta.name === name) data[delta.index!] += delta.h!;
      return Tensor.fromArray(data, [4, 2], { dtype: "float64" });
    };
    const scale = Tensor.scalar(s0 + (delta.name === "scale" ? delta.h! : 0), { dtype: "float64" });
    return { imageU: tensor("imageU"), imageV: tensor("imageV"), text: tensor("text"), logitScale: scale };
  };
  const inputs = make();
  for (const t of Object.values(inputs)) t.requiresGrad_();
  clipLoss(inputs).loss.backward();
  const h = 1e-6;
  const numeric = (name: string, index: number): number =>
    noGrad(() =>
      (clipLoss(make({ name, index, h })).loss.item() - clipLoss(make({ name, index, h: -h })).loss.item()) / (2 * h)
    );
  for (const name of ["imageU", "imageV", "text"] as const) {
    const grad = inputs[name].grad!.toArray();
    const expected = grad.map((_, i) => numeric(name, i));
    assertClose(grad, expected, { rtol: 1e-6, atol: 1e-8, message: `d loss / d ${name}` });
  }
  assertClose(inputs.logitScale.grad!.item(), numeric("scale", 0), { rtol: 1e-6, atol: 1e-8, message: "d loss / d s" });
});

// ---- iBOT: schedule, closed forms, gradients ---------------------------------------------------------------------

test("iBOT teacher temperatures: the official step and a longer linear warmup", () => {
  const official = new IBOTLoss({ outDim: 4, patchOutDim: 4 });
  try {
    assertEquals([0, 1, 2, 50].map((e) => official.teacherTempPatch(e)), [0.04, 0.07, 0.07, 0.07], "step schedule");
    assertEquals([0, 1, 99].map((e) => official.teacherTempCls(e)), [0.04, 0.04, 0.04], "constant CLS temperature");
    assertThrows(() => official.teacherTempPatch(-1), RangeError, ["bad epoch"]);
    assertThrows(() => official.teacherTempPatch(0.5), RangeError, ["bad epoch"]);
  } finally {
    official.dispose();
  }
  // np.linspace(0.04, 0.07, 4) = [0.04, 0.05, 0.06, 0.07], then 0.07.
  const ramp = new IBOTLoss({ outDim: 4, patchOutDim: 4, warmupEpochs: 4 });
  try {
    const temps = [0, 1, 2, 3, 4, 10].map((e) => ramp.teacherTempPatch(e));
    assertClose(temps, [0.04, 0.05, 0.06, 0.07, 0.07, 0.07], { rtol: 0, atol: 1e-15, message: "linear warmup" });
    assertEquals(temps[3], 0.07, "the warmup ends exactly on the final value");
  } finally {
    ramp.dispose();
  }
  const none = new IBOTLoss({ outDim: 4, patchOutDim: 4, warmupEpochs: 0 });
  try {
    assertEquals(none.teacherTempPatch(0), 0.07, "no warmup");
  } finally {
    none.dispose();
  }
});

/** Hand-sized iBOT inputs in float64: B = 2 (so 2B = 4 rows), N = 3 patches, K = 4 prototypes. */
function smallIBOT(seed: number) {
  const [twoB, n, k] = [4, 3, 4];
  const studentCls = uniformValues(twoB * k, seed, -2, 2);
  const teacherCls = uniformValues(twoB * k, seed + 1, -2, 2);
  const studentPatch = uniformValues(twoB * n * k, seed + 2, -2, 2);
  const teacherPatch = uniformValues(twoB * n * k, seed + 3, -2, 2);
  // Rows: u0 removes patches 0 and 2, u1 removes 1 and 2, v0 removes 0 and 1, v1 removes 1 and 2 (2 each).
  const masks = [[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 1, 1]];
  return { twoB, n, k, studentCls, teacherCls, studentPatch, teacherPatch, masks };
}

test("iBOT losses and center update equal the JS closed form (two steps, so the centers matter)", () => {
  const x = smallIBOT(21);
  const { twoB, n, k } = x;
  const ibot = new IBOTLoss({ outDim: k, patchOutDim: k });
  try {
    let center = new Array<number>(k).fill(0), center2 = new Array<number>(k).fill(0);
    for (const epoch of [0, 1]) {
      const tempPatch = epoch === 0 ? 0.04 : 0.07;
      const teacherCls = toMatrix(x.teacherCls, k), studentCls = toMatrix(x.studentCls, k);
      const targetCls = teacherCls.map((row) => softmax(row.map((z, j) => (z - center[j]) / 0.04)));
      const logCls = studentCls.map((row) => logSoftmax(row.map((z) => z / 0.1)));
      const h = (p: number[], logq: number[]): number => -p.reduce((s, pk, j) => s + pk * logq[j], 0);
      const b = twoB / 2;
      const mean = (values: number[]): number => values.reduce((s, v) => s + v, 0) / values.length;
      const crossUV = mean([0, 1].map((i) => h(targetCls[i], logCls[b + i])));
      const crossVU = mean([0, 1].map((i) => h(targetCls[b + i], logCls[i])));
      const cls = (crossUV + crossVU) / 2;
      const teacherPatch = toMatrix(x.teacherPatch, k), studentPatch = toMatrix(x.studentPatch, k); // rows r·n + j
      const perImage = x.masks.map((mask, r) => {
        let sum = 0;
        mask.forEach((m, j) => {
          const target = softmax(teacherPatch[r * n + j].map((z, kk) => (z - center2[kk]) / tempPatch));
          sum += m * h(target, logSoftmax(studentPatch[r * n + j].map((z) => z / 0.1)));
        });
        return sum / Math.max(mask.reduce((s, m) => s + m, 0), 1);
      });
      const patch = (mean(perImage.slice(0, b)) + mean(perImage.slice(b))) / 2;

      const result = ibot.forward({
        studentCls: Tensor.fromArray(x.studentCls, [twoB, k], { dtype: "float64" }),
        studentPatch: Tensor.fromArray(x.studentPatch, [twoB, n, k], { dtype: "float64" }),
        teacherCls: Tensor.fromArray(x.teacherCls, [twoB, k], { dtype: "float64" }),
        teacherPatch: Tensor.fromArray(x.teacherPatch, [twoB, n, k], { dtype: "float64" }),
        masks: Tensor.fromArray(x.masks.flat().map(Boolean), [twoB, n]),
      }, epoch);
      // The centers are float32 buffers, so the targets see them rounded to float32.
      assertClose(result.cls.item(), cls, { rtol: 1e-6, atol: 0, message: `epoch ${epoch} cls` });
      assertClose(result.patch.item(), patch, { rtol: 1e-6, atol: 0, message: `epoch ${epoch} patch` });
      assertClose(result.total.item(), cls + patch, { rtol: 1e-6, atol: 0, message: `epoch ${epoch} total` });

      const c = Array.from({ length: k }, (_, j) => mean(teacherCls.map((row) => row[j])));
      const c2 = Array.from(
        { length: k },
        (_, j) => mean(x.masks.map((_, r) => mean(Array.from({ length: n }, (_, p) => teacherPatch[r * n + p][j])))),
      );
      center = center.map((v, j) => 0.9 * v + 0.1 * c[j]);
      center2 = center2.map((v, j) => 0.9 * v + 0.1 * c2[j]);
      assertClose(ibot.center.toArray(), center, { rtol: 1e-6, atol: 1e-7, message: `epoch ${epoch} center` });
      assertClose(ibot.center2.toArray(), center2, { rtol: 1e-6, atol: 1e-7, message: `epoch ${epoch} center2` });
    }
  } finally {
    ibot.dispose();
  }
});

test("iBOT gradients: only the student gets them; finite differences; kept patches get none", () => {
  const x = smallIBOT(31);
  const { twoB, n, k } = x;
  const build = (studentCls: number[], studentPatch: number[]) => ({
    studentCls: Tensor.fromArray(studentCls, [twoB, k], { dtype: "float64" }),
    studentPatch: Tensor.fromArray(studentPatch, [twoB, n, k], { dtype: "float64" }),
    teacherCls: Tensor.fromArray(x.teacherCls, [twoB, k], { dtype: "float64" }),
    teacherPatch: Tensor.fromArray(x.teacherPatch, [twoB, n, k], { dtype: "float64" }),
    masks: Tensor.fromArray(x.masks.flat().map(Boolean), [twoB, n]),
  });
  // A fresh loss per evaluation, so every evaluation sees zero centers.
  const lossAt = (studentCls: number[], studentPatch: number[]): number => {
    const ibot = new IBOTLoss({ outDim: k, patchOutDim: k });
    try {
      return noGrad(() => ibot.forward(build(studentCls, studentPatch), 0).total.item());
    } finally {
      ibot.dispose();
    }
  };
  const inputs = build(x.studentCls, x.studentPatch);
  for (const t of Object.values(inputs)) if (t.dtype === "float64") t.requiresGrad_();
  const ibot = new IBOTLoss({ outDim: k, patchOutDim: k });
  try {
    ibot.forward(inputs, 0).total.backward();
  } finally {
    ibot.dispose();
  }
  assertEquals(inputs.teacherCls.grad, null, "teacher CLS logits get no gradient");
  assertEquals(inputs.teacherPatch.grad, null, "teacher patch logits get no gradient");
  const h = 1e-6;
  const gradCls = inputs.studentCls.grad!.toArray();
  const numericCls = gradCls.map((_, i) => {
    const plus = x.studentCls.slice(), minus = x.studentCls.slice();
    plus[i] += h;
    minus[i] -= h;
    return (lossAt(plus, x.studentPatch) - lossAt(minus, x.studentPatch)) / (2 * h);
  });
  assertClose(gradCls, numericCls, { rtol: 1e-5, atol: 1e-8, message: "d loss / d studentCls" });
  const gradPatch = inputs.studentPatch.grad!.toArray();
  const numericPatch = gradPatch.map((_, i) => {
    const plus = x.studentPatch.slice(), minus = x.studentPatch.slice();
    plus[i] += h;
    minus[i] -= h;
    return (lossAt(x.studentCls, plus) - lossAt(x.studentCls, minus)) / (2 * h);
  });
  assertClose(gradPatch, numericPatch, { rtol: 1e-5, atol: 1e-8, message: "d loss / d studentPatch" });
  x.masks.flat().forEach((m, p) => {
    if (m) return;
    const row = gradPatch.slice(p * k, (p + 1) * k);
    assertEquals(row, new Array(k).fill(0), `kept patch ${p} gets exactly zero gradient`);
  });
});

test("iBOT removed-only path: same loss and same gradients as the full path", () => {
  // 2B = 4 images, N = 8 patches, K = 16, 3 removed per image; float32 as in training.
  const [twoB, n, k, r] = [4, 8, 16, 3];
  const masks = [[1, 0, 0, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1, 1, 0], [
    1,
    1,
    0,
    0,
    0,
    0,
    0,
    1,
  ]];
  const maskTensor = Tensor.fromArray(masks.flat().map(Boolean), [twoB, n]);
  const removedIds = removedIdsOf(maskTensor); // (2B, R)
  assertEquals(removedIds.shape, [twoB, r], "removedIds shape");
  const studentPatchData = uniformValues(twoB * n * k, 41, -3, 3);
  const common = {
    teacherCls: Tensor.fromArray(uniformValues(twoB * k, 42, -3, 3), [twoB, k]),
    teacherPatch: Tensor.fromArray(uniformValues(twoB * n * k, 43, -3, 3), [twoB, n, k]),
    masks: maskTensor,
  };
  const run = (removedOnly: boolean) => {
    const studentCls = Tensor.fromArray(uniformValues(twoB * k, 44, -3, 3), [twoB, k]).requiresGrad_();
    const studentPatch = Tensor.fromArray(studentPatchData, [twoB, n, k]).requiresGrad_(); // (2B, N, K) leaf
    const ibot = new IBOTLoss({ outDim: k, patchOutDim: k });
    try {
      const index = removedIds.unsqueeze(-1).expand([twoB, r, k]);
      const result = ibot.forward({
        ...common,
        studentCls,
        studentPatch: removedOnly ? studentPatch.gather(1, index) : studentPatch, // (2B, R, K) or (2B, N, K)
        removedIds: removedOnly ? removedIds : null,
      }, 0);
      result.total.backward();
      return {
        patch: result.patch.item(),
        cls: result.cls.item(),
        gradPatch: studentPatch.grad!.toArray(),
        gradCls: studentCls.grad!.toArray(),
        center2: ibot.center2.toArray(),
      };
    } finally {
      ibot.dispose();
    }
  };
  const full = run(false), removed = run(true);
  assertClose(removed.patch, full.patch, { rtol: 1e-6, atol: 0, message: "patch loss" });
  assertEquals(removed.cls, full.cls, "cls loss");
  assertClose(removed.gradPatch, full.gradPatch, { rtol: 1e-5, atol: 1e-9, message: "student patch gradient" });
  assertEquals(removed.gradCls, full.gradCls, "student CLS gradient");
  assertEquals(removed.center2, full.center2, "center2 (from the full teacher patches in both paths)");
});

test("iBOT centers: state dict round trip, setCenters and the all-reduce hook", () => {
  const k = 4;
  const ibot = new IBOTLoss({ outDim: k, patchOutDim: k });
  try {
    assertEquals([...ibot.stateDict().keys()], ["center", "center2"], "state dict keys (official buffer names)");
    ibot.setCenters(Tensor.fromArray([1, 2, 3, 4], [1, k]), Tensor.fromArray([5, 6, 7, 8], [1, 1, k]));
    assertEquals(ibot.center.toArray(), [1, 2, 3, 4], "center after setCenters");
    assertEquals(ibot.center2.toArray(), [5, 6, 7, 8], "center2 after setCenters");
    assertThrows(() => ibot.setCenters(Tensor.zeros([1, 3]), Tensor.zeros([1, 1, k])), Error, ["center"]);
    // A hook that stands in for two ranks whose other rank averaged to zero: it halves the local mean.
    const seen: number[][] = [];
    const allReduceMean = (t: Tensor): Tensor => {
      seen.push(t.shape);
      return t.mul(0.5);
    };
    const teacherCls = Tensor.fromArray([1, 1, 1, 1, 3, 3, 3, 3], [2, k]);
    const teacherPatch = Tensor.ones([2, 2, k]);
    ibot.forward(
      {
        studentCls: Tensor.zeros([2, k]),
        studentPatch: Tensor.zeros([2, 2, k]),
        teacherCls,
        teacherPatch,
        masks: Tensor.fromArray([true, false, false, true], [2, 2]),
      },
      0,
      { allReduceMean },
    );
    assertEquals(seen, [[1, k], [1, k]], "the hook sees both (1, K) local means");
    // c = 0.5 * mean = 1, c2 = 0.5 * 1 = 0.5.
    assertClose(ibot.center.toArray(), [1, 2, 3, 4].map((v) => 0.9 * v + 0.1), { rtol: 1e-6, message: "center" });
    assertClose(ibot.center2.toArray(), [5, 6, 7, 8].map((v) => 0.9 * v + 0.05), { rtol: 1e-6, message: "center2" });
  } finally {
    ibot.dispose();
  }
});

test("iBOT rejects inputs of the wrong shape with the shapes in the message", () => {
  const ibot = new IBOTLoss({ outDim: 4, patchOutDim: 4 });
  try {
    const ok = {
      studentCls: Tensor.zeros([2, 4]),
      studentPatch: Tensor.zeros([2, 3, 4]),
      teacherCls: Tensor.zeros([2, 4]),
      teacherPatch: Tensor.zeros([2, 3, 4]),
      masks: Tensor.zeros([2, 3], { dtype: "bool" }),
    };
    assertThrows(() => ibot.forward({ ...ok, masks: Tensor.zeros([2, 2], { dtype: "bool" }) }, 0), RangeError, [
      "masks must be (2B, N)",
      "masks [2, 2]",
    ]);
    assertThrows(() => ibot.forward({ ...ok, studentCls: Tensor.zeros([2, 5]) }, 0), RangeError, ["studentCls"]);
    assertThrows(
      () => ibot.forward({ ...ok, removedIds: Tensor.zeros([2, 1], { dtype: "int64" }) }, 0),
      RangeError,
      ["(2B, R, K) at removedIds"],
    );
    assertThrows(() => ibot.forward({ ...ok, teacherCls: Tensor.zeros([3, 4]) }, 0), RangeError, ["two views"]);
  } finally {
    ibot.dispose();
  }
});

// ---- reconstruction ----------------------------------------------------------------------------------------------

test("patchify: element (p·P + q)·3 + c of patch (i, j) is pixel (i·P + p, j·P + q), channel c", () => {
  const [b, c, h, w, p] = [2, 3, 4, 6, 2];
  const value = (bi: number, ci: number, y: number, x: number): number => bi * 1000 + ci * 100 + y * 10 + x;
  const data: number[] = [];
  for (let bi = 0; bi < b; bi++) {
    for (let ci = 0; ci < c; ci++) {
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.push(value(bi, ci, y, x));
    }
  }
  const patches = patchify(Tensor.fromArray(data, [b, c, h, w]), p);
  assertEquals(patches.shape, [b, (h / p) * (w / p), p * p * c], "shape");
  const flat = patches.toArray();
  const cols = w / p;
  for (let bi = 0; bi < b; bi++) {
    for (let l = 0; l < (h / p) * cols; l++) {
      const [i, j] = [Math.floor(l / cols), l % cols];
      for (let pp = 0; pp < p; pp++) {
        for (let q = 0; q < p; q++) {
          for (let ci = 0; ci < c; ci++) {
            const got = flat[(bi * (h / p) * cols + l) * p * p * c + (pp * p + q) * c + ci];
            assertEquals(got, value(bi, ci, i * p + pp, j * p + q), `b ${bi} patch ${l} (${pp}, ${q}) channel ${ci}`);
          }
        }
      }
    }
  }
  assertThrows(() => patchify(Tensor.zeros([1, 3, 5, 4]), 2), RangeError, ["5x4", "2x2"]);
});

test("reconstruction loss equals the JS closed form, with and without norm_pix", () => {
  const [b, c, h, w, p] = [2, 3, 4, 4, 2];
  const l = (h / p) * (w / p), d = p * p * c;
  const images = uniformValues(b * c * h * w, 51, -2, 2);
  const pred = uniformValues(b * l * d, 52, -2, 2);
  const mask = [[1, 0, 1, 0], [0, 0, 0, 1]];
  const imageTensor = Tensor.fromArray(images, [b, c, h, w], { dtype: "float64" });
  const target = toMatrix(patchify(imageTensor, p).toArray(), d); // rows b·L + l (patchify is checked above)
  for (const normPix of [false, true]) {
    let total = 0, count = 0;
    target.forEach((row, idx) => {
      const m = mask[Math.floor(idx / l)][idx % l];
      if (!m) return;
      const mean = row.reduce((s, v) => s + v, 0) / d;
      const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / (d - 1);
      const t = normPix ? row.map((v) => (v - mean) / Math.sqrt(variance + 1e-6)) : row;
      total += t.reduce((s, v, k) => s + (pred[idx * d + k] - v) ** 2, 0) / d;
      count++;
    });
    const got = reconstructionLoss(
      Tensor.fromArray(pred, [b, l, d], { dtype: "float64" }),
      imageTensor,
      Tensor.fromArray(mask.flat().map(Boolean), [b, l]),
      { patch: p, normPix },
    );
    assertClose(got.item(), total / count, { rtol: 1e-12, atol: 0, message: `normPix ${normPix}` });
  }
});

test("reconstruction gradients reach removed patches only; no removal gives 0, not NaN", () => {
  const [b, l, d] = [2, 4, 12];
  const pred = Tensor.fromArray(uniformValues(b * l * d, 61), [b, l, d], { dtype: "float64" }).requiresGrad_();
  const images = Tensor.fromArray(uniformValues(b * 3 * 4 * 4, 62), [b, 3, 4, 4], { dtype: "float64" });
  const mask = [[0, 1, 0, 0], [1, 0, 0, 1]];
  reconstructionLoss(pred, images, Tensor.fromArray(mask.flat().map(Boolean), [b, l]), { patch: 2 }).backward();
  const grad = pred.grad!.toArray();
  mask.flat().forEach((m, patch) => {
    const row = grad.slice(patch * d, (patch + 1) * d);
    if (m) assert(row.some((g) => g !== 0), `removed patch ${patch} gets a gradient`);
    else assertEquals(row, new Array(d).fill(0), `kept patch ${patch} gets exactly zero gradient`);
  });
  const none = reconstructionLoss(pred, images, Tensor.zeros([b, l], { dtype: "bool" }), { patch: 2 });
  assertEquals(none.item(), 0, "no removed patch");
  assertThrows(
    () => reconstructionLoss(pred, images, Tensor.zeros([b, 3], { dtype: "bool" }), { patch: 2 }),
    RangeError,
    ["mask [2, 3]"],
  );
});

// ---- total -----------------------------------------------------------------------------------------------------------

test("detailClipLoss applies the four weights to the terms and keeps values on the device", () => {
  withGolden((golden) => {
    const { meta, out, input } = golden;
    const weights = { clip: 0.5, reconst: 2, ibotPatch: 0.25, ibotCls: 3 };
    const ibot = goldenIBOT(golden);
    try {
      const result = detailClipLoss(goldenModelOutputs(out), { u: input("u"), v: input("v") }, ibot, 0, {
        patchSize: 16,
        weights,
      });
      const m = meta.losses;
      const expected = weights.clip * (m.contra_loss_1 + m.contra_loss_2) / 2 + weights.reconst * m.reconst_loss +
        weights.ibotPatch * m.ibot_patch_loss + weights.ibotCls * m.ibot_cls_loss;
      assertClose(result.loss.item(), expected, { ...GOLDEN_TOL, message: "weighted total" });
      // The unweighted metrics are logged as they are.
      assertClose(result.ibot_loss.item(), m.ibot_loss, { ...GOLDEN_TOL, message: "ibot_loss stays unweighted" });
      for (const value of Object.values(result)) assertEquals(value.device, "cpu", "values stay tensors on the device");
    } finally {
      ibot.dispose();
    }
  });
});
