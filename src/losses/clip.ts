// clip.ts: the SLIP-style contrastive loss of DetailCLIP (docs/training.md#clip-contrastive-loss), once per view. The
// caption embedding is shared by both image views. Distributed training passes a `gather` that all-gathers with
// gradient (its backward sums the incoming gradients over ranks and returns this rank's slice); the default is the
// single-process identity. The arithmetic order follows the official code ((s * x) @ yᵀ), so results agree to float
// rounding, not just in value.
import { F, Tensor } from "../torch/mod.ts";

export interface ClipLossInputs {
  /** (B, E) image embeddings of the u and v views (not normalised). */
  imageU: Tensor;
  imageV: Tensor;
  /** (B, E) caption embeddings (not normalised). */
  text: Tensor;
  /** The temperature s = exp(logit_scale), 0-d (the model returns it already exponentiated). */
  logitScale: Tensor;
}

export interface ClipLossOptions {
  /** (B, E) -> (W·B, E), concatenated in rank order, with gradient. Identity when omitted (one process). */
  gather?: (t: Tensor) => Tensor;
  /** This process's rank: the labels of the local rows are rank·B + b. */
  rank?: number;
}

/** The contrastive loss and its parts (image and text directions, accuracy). */
export interface ClipLossResult {
  /** ½(L_u + L_v), 0-d. */
  loss: Tensor;
  /** L_u (logged as contra_loss_1) and L_v (contra_loss_2), 0-d. */
  lossU: Tensor;
  lossV: Tensor;
  /** clip_acc: 100 · fraction of local v-view images whose best caption is their own, 0-d float (no gradient). */
  accuracy: Tensor;
}

/** The CLIP contrastive loss of both views; everything stays on the device (no host sync). */
export function clipLoss(inputs: ClipLossInputs, options: ClipLossOptions = {}): ClipLossResult {
  const { gather = (t: Tensor) => t, rank = 0 } = options;
  const batch = inputs.text.size(0);
  const imageU = F.normalize(inputs.imageU); // (B, E)
  const imageV = F.normalize(inputs.imageV); // (B, E)
  const text = F.normalize(inputs.text); // (B, E)
  const imageUAll = gather(imageU); // (W·B, E)
  const imageVAll = gather(imageV); // (W·B, E)
  const textAll = gather(text); // (W·B, E)
  const labels = Tensor.arange(rank * batch, (rank + 1) * batch, 1, { device: text.device }); // (B) int64
  const s = inputs.logitScale;

  // One view: ½[CE(s·Î·T_allᵀ, y) + CE(s·T̂·I_allᵀ, y)]; also returns the image->text logits for the accuracy.
  const viewLoss = (image: Tensor, imageAll: Tensor): { loss: Tensor; logitsPerImage: Tensor } => {
    const logitsPerImage = s.mul(image).matmul(textAll.transpose(0, 1)); // (B, W·B)
    const logitsPerText = s.mul(text).matmul(imageAll.transpose(0, 1)); // (B, W·B)
    const loss = F.crossEntropy(logitsPerImage, labels).add(F.crossEntropy(logitsPerText, labels)).div(2);
    return { loss, logitsPerImage };
  };
  const u = viewLoss(imageU, imageUAll);
  const v = viewLoss(imageV, imageVAll);
  const loss = u.loss.mul(0.5).add(v.loss.mul(0.5));

  // The official metric reads the v view's image->text logits only.
  const correct = v.logitsPerImage.detach().argmax(-1).eq(labels).sum(); // () int64
  const accuracy = correct.float().mul(100).div(batch);
  return { loss, lossU: u.loss, lossV: v.loss, accuracy };
}
