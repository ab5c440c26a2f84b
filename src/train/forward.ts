// forward.ts: one micro-batch's training forward and its loss terms, for either model kind: DetailCLIP (two views,
// the EMA teacher, CLIP + pixel + iBOT losses) or the plain CLIP baseline (the CLIP loss only). Names of the terms are
// the official ones, so logs and metrics read like the reference run's.
import { detailClipLoss, type DetailClipLossResult, type IBOTLoss } from "../losses/mod.ts";
import { clipLoss } from "../losses/clip.ts";
import type { AnyModel } from "../models/build.ts";
import { CLIP } from "../models/clip.ts";
import { DetailCLIP } from "../models/detailclip.ts";
import type { Tensor } from "../torch/mod.ts";

export interface ForwardOptions {
  /** The teacher's EMA momentum, or null to leave it (every micro-batch but an optimizer step's first). */
  momentum: number | null;
  epoch: number;
  weights: { clip: number; reconst: number; ibotPatch: number; ibotCls: number };
  normPix: boolean;
  /** Distributed hooks (absent on one process): gather with gradient, mean over ranks, this rank. */
  dist?: { gather: (t: Tensor) => Tensor; allReduceMean: (t: Tensor) => Tensor; rank: number };
}

/** One micro-batch: the model's training forward and its loss terms (official names), all on the device. */
export function forwardLoss(
  model: AnyModel,
  ibot: IBOTLoss | null,
  batch: { u: Tensor; v: Tensor | null; text: Tensor },
  options: ForwardOptions,
): { loss: Tensor; terms: Record<string, Tensor> } {
  if (model instanceof DetailCLIP) {
    if (batch.v === null || ibot === null) throw new Error("DetailCLIP training needs two views and the iBOT loss");
    const out = model.forwardTrain(batch.u, batch.v, batch.text, options.momentum);
    const terms: DetailClipLossResult = detailClipLoss(out, { u: batch.u, v: batch.v }, ibot, options.epoch, {
      patchSize: model.config.vision.patchSize,
      normPix: options.normPix,
      weights: options.weights,
      ...options.dist,
    });
    return { loss: terms.loss, terms: { ...terms } };
  }
  if (!(model instanceof CLIP)) throw new Error("unknown model type");
  const { imageEmbed, textEmbed, logitScale } = model.forward(batch.u, batch.text);
  const clip = clipLoss({ imageU: imageEmbed, imageV: imageEmbed, text: textEmbed, logitScale }, options.dist);
  return { loss: clip.loss, terms: { loss: clip.loss, clip_acc: clip.accuracy } };
}
