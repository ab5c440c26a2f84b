// decoder.ts: the MAE-style pieces of DetailCLIP's pixel decoder: the fixed 2-D sin-cos position table and the
// rebuild of the full token sequence from the encoder's kept tokens plus shared mask tokens
// (docs/model.md#decoder-and-pixel-reconstruction).
import { cat, type Tensor } from "../torch/mod.ts";

/**
 * MAE's get_2d_sincos_pos_embed with a zero CLS row: (1 + g², dim) row-major, computed in float64 as numpy does and
 * rounded to float32 once. For patch (row i, col j): dims [0, dim/4) sin(j·ω), [dim/4, dim/2) cos(j·ω),
 * [dim/2, 3dim/4) sin(i·ω), [3dim/4, dim) cos(i·ω), with ω_k = 10000^(−k/(dim/4)).
 */
export function sincosPosEmbed2d(dim: number, gridSize: number): Float32Array {
  if (dim % 4 !== 0) throw new Error(`sin-cos position table: dim ${dim} is not a multiple of 4`);
  const quarter = dim / 4;
  const omega = Array.from({ length: quarter }, (_, k) => 1 / Math.pow(10000, k / quarter));
  const out = new Float32Array((1 + gridSize * gridSize) * dim);
  for (let i = 0; i < gridSize; i++) {
    for (let j = 0; j < gridSize; j++) {
      const row = (1 + i * gridSize + j) * dim;
      for (let k = 0; k < quarter; k++) {
        out[row + k] = Math.sin(j * omega[k]);
        out[row + quarter + k] = Math.cos(j * omega[k]);
        out[row + 2 * quarter + k] = Math.sin(i * omega[k]);
        out[row + 3 * quarter + k] = Math.cos(i * omega[k]);
      }
    }
  }
  return out;
}

/**
 * Rebuilds the full sequence: the kept tokens (after CLS) followed by mask tokens, un-shuffled to raster order by
 * idsRestore, with the CLS token in front. x: (B, 1+K, D), maskToken: (1, 1, D), idsRestore: (B, L) -> (B, 1+L, D).
 */
export function restoreSequence(x: Tensor, maskToken: Tensor, idsRestore: Tensor): Tensor {
  const [batch, tokens, dim] = x.shape;
  const length = idsRestore.size(1);
  const kept = x.slice(1, 1); // (B, K, D)
  const masked = maskToken.expand([batch, length + 1 - tokens, dim]); // (B, L-K, D)
  const shuffled = cat([kept, masked], 1); // (B, L, D): kept first, then removed
  const index = idsRestore.unsqueeze(-1).expand([batch, length, dim]); // (B, L, D)
  const raster = shuffled.gather(1, index); // (B, L, D) in raster order
  return cat([x.slice(1, 0, 1), raster], 1); // (B, 1+L, D)
}
