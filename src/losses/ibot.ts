// ibot.ts: the iBOT self-distillation loss as DetailCLIP uses it (docs/training.md#ibot-loss): a cross-view CLS term
// and a same-view patch term over the removed patches, with centred and sharpened teacher targets. The centers C (1, K)
// and C2 (1, 1, K) are buffers of this module (so checkpoints hold them, docs/parity.md#checkpoint-contents) and are
// updated after the losses, from the teacher outputs, so a step always uses the previous centers.
//
// Two ways to give the student's patch logits:
// - full: studentPatch (2B, N, K), as the official code computes them;
// - removed positions only (docs/parity.md#student-patch-head-at-removed-positions): studentPatch (2B, R, K) with
// removedIds (2B, R), the patch index of each
//   row. The teacher targets are gathered at the same indices; the rows are weighted by the mask there and each
//   image is normalised by its full mask count, so both forms give the same loss and the same gradients.
import { Module } from "../nn/module.ts";
import { type Device, F, noGrad, Tensor, tidy } from "../torch/mod.ts";

export interface IBOTLossOptions {
  /** K of the CLS logits (official 8192). */
  outDim: number;
  /** K of the patch logits (official 8192; the head is shared, so equal to outDim). */
  patchOutDim: number;
  /** Student temperature τ_s (0.1). */
  studentTemp?: number;
  /** Teacher CLS temperature; the official warmup goes 0.04 -> 0.04, so it is a constant (0.04). */
  teacherTempCls?: number;
  /** Teacher patch temperature at the start of the warmup (0.04). */
  warmupTeacherTempPatch?: number;
  /** Teacher patch temperature after the warmup (0.07). */
  teacherTempPatch?: number;
  /**
   * Epochs of the patch-temperature warmup (1). The schedule is np.linspace(warmup, final, warmupEpochs) for the
   * first warmupEpochs epochs, then final; with the official 1 it is a step: 0.04 in epoch 0, 0.07 from epoch 1.
   * iBOT's longer warmups (e.g. 30) ramp linearly.
   */
  warmupEpochs?: number;
  /** Center momenta (0.9 each): C <- m·C + (1 - m)·c. */
  centerMomentum?: number;
  centerMomentum2?: number;
  /** Where the centers live (the teacher outputs' device). */
  device?: Device;
}

export interface IBOTLossInputs {
  /** (2B, K) student CLS logits, ordered [u-batch; v-batch]. */
  studentCls: Tensor;
  /** (2B, N, K) student patch logits, or (2B, R, K) at removedIds. */
  studentPatch: Tensor;
  /** (2B, K) teacher CLS logits. */
  teacherCls: Tensor;
  /** (2B, N, K) teacher patch logits on the full, un-masked views (always every patch: the centers need them). */
  teacherPatch: Tensor;
  /** (2B, N) bool, true = removed: cat([maskU, maskV]). */
  masks: Tensor;
  /** (2B, R) int64 patch index of each studentPatch row, or null/omitted when studentPatch covers every patch. */
  removedIds?: Tensor | null;
}

export interface IBOTLossHooks {
  /** Averages a local mean over ranks (an all-reduce sum divided by the world size); identity when omitted. */
  allReduceMean?: (t: Tensor) => Tensor;
}

/** The iBOT loss terms (CLS and patch self-distillation) and their total. */
export interface IBOTLossResult {
  /** Cross-view CLS loss, 0-d (logged as ibot_cls_loss). */
  cls: Tensor;
  /** Same-view patch loss over removed patches, 0-d (ibot_patch_loss). */
  patch: Tensor;
  /** cls + patch, 0-d (ibot_loss). */
  total: Tensor;
}

/** np.linspace(start, stop, num)[index] for 0 <= index < num, with numpy's exact endpoint. */
function linspaceAt(start: number, stop: number, num: number, index: number): number {
  if (num === 1) return start;
  if (index === num - 1) return stop;
  return index * ((stop - start) / (num - 1)) + start;
}

/** iBOT self-distillation: teacher-centred, sharpened targets for the student's CLS and masked patch tokens. */
export class IBOTLoss extends Module {
  readonly outDim: number;
  readonly patchOutDim: number;
  readonly studentTemp: number;
  readonly centerMomentum: number;
  readonly centerMomentum2: number;
  readonly #teacherTempCls: number;
  readonly #warmupTeacherTempPatch: number;
  readonly #finalTeacherTempPatch: number;
  readonly #warmupEpochs: number;
  readonly #center: Tensor; // (1, K)
  readonly #center2: Tensor; // (1, 1, K)

  constructor(options: IBOTLossOptions) {
    super();
    this.outDim = options.outDim;
    this.patchOutDim = options.patchOutDim;
    this.studentTemp = options.studentTemp ?? 0.1;
    this.#teacherTempCls = options.teacherTempCls ?? 0.04;
    this.#warmupTeacherTempPatch = options.warmupTeacherTempPatch ?? 0.04;
    this.#finalTeacherTempPatch = options.teacherTempPatch ?? 0.07;
    this.#warmupEpochs = options.warmupEpochs ?? 1;
    this.centerMomentum = options.centerMomentum ?? 0.9;
    this.centerMomentum2 = options.centerMomentum2 ?? 0.9;
    if (!Number.isInteger(this.#warmupEpochs) || this.#warmupEpochs < 0) {
      throw new RangeError(`IBOTLoss: warmupEpochs must be a non-negative integer, got ${this.#warmupEpochs}`);
    }
    // Registered as in the official module (register_buffer "center", "center2"), zero-initialised.
    this.#center = this.buffer("center", Tensor.zeros([1, this.outDim], { device: options.device }));
    this.#center2 = this.buffer("center2", Tensor.zeros([1, 1, this.patchOutDim], { device: options.device }));
  }

  /** C: (1, K), the live buffer (updated in place by forward). */
  get center(): Tensor {
    return this.#center;
  }

  /** C2: (1, 1, K). */
  get center2(): Tensor {
    return this.#center2;
  }

  /** Overwrites both centers (a resume); shapes must match. */
  setCenters(center: Tensor, center2: Tensor): void {
    this.loadStateDict(new Map([["center", center], ["center2", center2]]), { where: "IBOTLoss.setCenters" });
  }

  /** The teacher CLS temperature at `epoch` (constant). */
  teacherTempCls(_epoch: number): number {
    return this.#teacherTempCls;
  }

  /** The teacher patch temperature at integer `epoch`: the linspace warmup, then the final value. */
  teacherTempPatch(epoch: number): number {
    if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`teacherTempPatch: bad epoch ${epoch}`);
    if (epoch >= this.#warmupEpochs) return this.#finalTeacherTempPatch;
    return linspaceAt(this.#warmupTeacherTempPatch, this.#finalTeacherTempPatch, this.#warmupEpochs, epoch);
  }

  /**
   * The losses at `epoch`, then the center update from this step's teacher outputs. Teacher targets carry no
   * gradient; the student logits do.
   */
  forward(inputs: IBOTLossInputs, epoch: number, hooks: IBOTLossHooks = {}): IBOTLossResult {
    const { studentCls, studentPatch, teacherCls, teacherPatch, masks } = inputs;
    const removedIds = inputs.removedIds ?? null;
    const twoB = teacherCls.size(0);
    const batch = twoB / 2;
    this.#checkShapes(inputs, twoB, removedIds);
    const tempCls = this.teacherTempCls(epoch);
    const tempPatch = this.teacherTempPatch(epoch);

    // ---- CLS: teacher view u teaches student view v and vice versa.
    const targetCls = F.softmax(teacherCls.sub(this.#center).div(tempCls), -1).detach(); // (2B, K)
    const logProbCls = F.logSoftmax(studentCls.div(this.studentTemp), -1); // (2B, K)
    const crossEntropyCls = (teacherRows: number, studentRows: number): Tensor =>
      targetCls.narrow(0, teacherRows, batch).neg().mul(logProbCls.narrow(0, studentRows, batch)).sum(-1).mean();
    const cls = crossEntropyCls(0, batch).add(crossEntropyCls(batch, 0)).div(2);

    // ---- Patches: same view, removed positions only, each image normalised by its count of removed patches.
    let teacherRows = teacherPatch; // (2B, N or R, K)
    let weights = masks.float(); // (2B, N or R)
    if (removedIds !== null) {
      const index = removedIds.unsqueeze(-1).expand([twoB, removedIds.size(1), teacherPatch.size(2)]); // (2B, R, K)
      teacherRows = teacherPatch.gather(1, index); // (2B, R, K)
      weights = weights.gather(1, removedIds); // (2B, R)
    }
    const targetPatch = F.softmax(teacherRows.sub(this.#center2).div(tempPatch), -1).detach(); // (2B, ·, K)
    const logProbPatch = F.logSoftmax(studentPatch.div(this.studentTemp), -1); // (2B, ·, K)
    const perPatch = targetPatch.neg().mul(logProbPatch).sum(-1); // (2B, ·)
    const counts = masks.float().sum(-1).clamp(1); // (2B)
    const perImage = perPatch.mul(weights).sum(-1).div(counts); // (2B)
    const patch = perImage.narrow(0, 0, batch).mean().add(perImage.narrow(0, batch, batch).mean()).div(2);

    this.#updateCenters(teacherCls, teacherPatch, hooks.allReduceMean ?? ((t) => t));
    return { cls, patch, total: cls.add(patch) };
  }

  #updateCenters(teacherCls: Tensor, teacherPatch: Tensor, allReduceMean: (t: Tensor) => Tensor): void {
    noGrad(() =>
      tidy(() => {
        const images = teacherCls.size(0);
        const clsCenter = allReduceMean(teacherCls.float().sum(0, true).div(images)); // (1, K)
        const patchCenter = allReduceMean(teacherPatch.float().mean(1).sum(0, true).div(images)); // (1, K)
        const m = this.centerMomentum, m2 = this.centerMomentum2;
        this.#center.copy_(this.#center.mul(m).add(clsCenter.mul(1 - m)));
        this.#center2.copy_(this.#center2.mul(m2).add(patchCenter.mul(1 - m2))); // (1, 1, K) by broadcasting
      })
    );
  }

  #checkShapes(inputs: IBOTLossInputs, twoB: number, removedIds: Tensor | null): void {
    const shape = (t: Tensor): string => `[${t.shape.join(", ")}]`;
    const { studentCls, studentPatch, teacherCls, teacherPatch, masks } = inputs;
    const fail = (what: string): never => {
      throw new RangeError(
        `IBOTLoss: ${what} (studentCls ${shape(studentCls)}, studentPatch ${shape(studentPatch)}, teacherCls ` +
          `${shape(teacherCls)}, teacherPatch ${shape(teacherPatch)}, masks ${shape(masks)}` +
          `${removedIds ? `, removedIds ${shape(removedIds)}` : ""})`,
      );
    };
    if (twoB % 2 !== 0) fail(`the batch must hold two views, got ${twoB} rows`);
    if (teacherCls.ndim !== 2 || teacherCls.size(1) !== this.outDim) fail(`teacherCls must be (2B, ${this.outDim})`);
    if (studentCls.ndim !== 2 || studentCls.size(0) !== twoB || studentCls.size(1) !== this.outDim) {
      fail(`studentCls must be (2B, ${this.outDim})`);
    }
    if (teacherPatch.ndim !== 3 || teacherPatch.size(0) !== twoB || teacherPatch.size(2) !== this.patchOutDim) {
      fail(`teacherPatch must be (2B, N, ${this.patchOutDim})`);
    }
    const patches = teacherPatch.size(1);
    if (masks.ndim !== 2 || masks.size(0) !== twoB || masks.size(1) !== patches) fail("masks must be (2B, N)");
    const rows = removedIds === null ? patches : removedIds.size(1);
    if (removedIds !== null && (removedIds.ndim !== 2 || removedIds.size(0) !== twoB)) {
      fail("removedIds must be (2B, R)");
    }
    if (
      studentPatch.ndim !== 3 || studentPatch.size(0) !== twoB || studentPatch.size(1) !== rows ||
      studentPatch.size(2) !== this.patchOutDim
    ) {
      fail(removedIds === null ? "studentPatch must be (2B, N, K)" : "studentPatch must be (2B, R, K) at removedIds");
    }
  }
}
