// embedding.ts: torch.nn.Embedding. Default init N(0, 1) as PyTorch; CLIP re-initialises with N(0, 0.02).
import { F, Tensor } from "../torch/mod.ts";
import { Module } from "./module.ts";

export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly dim: number;
  readonly weight: Tensor; // (num, dim)

  constructor(numEmbeddings: number, dim: number) {
    super();
    this.numEmbeddings = numEmbeddings;
    this.dim = dim;
    this.weight = this.parameter("weight", Tensor.empty([numEmbeddings, dim]).normal_(0, 1));
  }

  /** indices: (...) int64 -> (..., dim). */
  forward(indices: Tensor): Tensor {
    return F.embedding(this.weight, indices);
  }
}
