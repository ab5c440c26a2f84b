// total.ts: the DetailCLIP objective (docs/training.md#total-loss), L = w_clip·L_CLIP + w_rec·L_REC + w_patch·L_patch +
// w_cls·L_cls, and the metrics the official loop logs, by their official names. Every value is a device tensor: reading
// them is the caller's choice (at logging intervals), so a step never waits on the host here.
import type { Tensor } from "../torch/mod.ts";
import { cat } from "../torch/mod.ts";
import { clipLoss } from "./clip.ts";
import type { IBOTLoss } from "./ibot.ts";
import { reconstructionLoss } from "./reconstruction.ts";

/** What the loss reads from one training forward (DetailClipOutputs satisfies it). */
export interface DetailClipLossInputs {
  /** (B, E) image embeddings of the masked views and (B, E) caption embedding. */
  imageEmbedU: Tensor;
  imageEmbedV: Tensor;
  textEmbed: Tensor;
  /** exp(logit_scale), 0-d. */
  logitScale: Tensor;
  /** (2B, K), (2B, N, K) teacher and (2B, K), (2B, N or R, K) student iBOT logits, ordered [u; v]. */
  teacherCls: Tensor;
  teacherPatch: Tensor;
  studentCls: Tensor;
  studentPatch: Tensor;
  /** (2B, R) patch indices of the studentPatch rows, or null when studentPatch covers every patch. */
  removedIds?: Tensor | null;
  /** (B, N, P·P·3) pixel predictions of each view. */
  reconstructionU: Tensor;
  reconstructionV: Tensor;
  /** (B, N) bool, true = removed. */
  maskU: Tensor;
  maskV: Tensor;
}

/** (B, 3, H, W) the augmented, normalised views fed to the model: the reconstruction targets. */
export interface DetailClipViews {
  u: Tensor;
  v: Tensor;
}

export interface LossWeights {
  clip: number;
  reconst: number;
  ibotPatch: number;
  ibotCls: number;
}

export interface DetailClipLossOptions {
  /** Patch size P of the reconstruction target. */
  patchSize: number;
  /** Per-patch target normalisation (default true; --disable-norm-pix-loss turns it off). */
  normPix?: boolean;
  /** The four weights (each defaults to 1, as the official flags do). */
  weights?: Partial<LossWeights>;
  /** Distributed hooks: all-gather with gradient for the CLIP loss, mean over ranks for the iBOT centers. */
  gather?: (t: Tensor) => Tensor;
  allReduceMean?: (t: Tensor) => Tensor;
  rank?: number;
}

/** The official metric names, in the official logging order; every value is 0-d. */
export type DetailClipLossResult = {
  loss: Tensor;
  reconst_loss: Tensor;
  ibot_patch_loss: Tensor;
  ibot_cls_loss: Tensor;
  ibot_loss: Tensor;
  contra_loss_1: Tensor;
  contra_loss_2: Tensor;
  clip_acc: Tensor;
};

/** The whole objective at `epoch`; also updates the iBOT centers (after computing the losses). */
export function detailClipLoss(
  inputs: DetailClipLossInputs,
  views: DetailClipViews,
  ibot: IBOTLoss,
  epoch: number,
  options: DetailClipLossOptions,
): DetailClipLossResult {
  const weights: LossWeights = { clip: 1, reconst: 1, ibotPatch: 1, ibotCls: 1, ...options.weights };
  const { patchSize: patch, normPix = true } = options;

  const ibotLosses = ibot.forward(
    {
      studentCls: inputs.studentCls,
      studentPatch: inputs.studentPatch,
      teacherCls: inputs.teacherCls,
      teacherPatch: inputs.teacherPatch,
      masks: cat([inputs.maskU, inputs.maskV], 0), // (2B, N)
      removedIds: inputs.removedIds ?? null,
    },
    epoch,
    { allReduceMean: options.allReduceMean },
  );

  const reconstU = reconstructionLoss(inputs.reconstructionU, views.u, inputs.maskU, { patch, normPix });
  const reconstV = reconstructionLoss(inputs.reconstructionV, views.v, inputs.maskV, { patch, normPix });
  const reconst = reconstU.add(reconstV).mul(0.5);

  const clip = clipLoss(
    { imageU: inputs.imageEmbedU, imageV: inputs.imageEmbedV, text: inputs.textEmbed, logitScale: inputs.logitScale },
    { gather: options.gather, rank: options.rank },
  );

  const loss = clip.loss.mul(weights.clip)
    .add(reconst.mul(weights.reconst))
    .add(ibotLosses.patch.mul(weights.ibotPatch))
    .add(ibotLosses.cls.mul(weights.ibotCls));
  return {
    loss,
    reconst_loss: reconst,
    ibot_patch_loss: ibotLosses.patch,
    ibot_cls_loss: ibotLosses.cls,
    ibot_loss: ibotLosses.total,
    contra_loss_1: clip.lossU,
    contra_loss_2: clip.lossV,
    clip_acc: clip.accuracy,
  };
}
