// retrieval.ts: image↔text retrieval recall@K from embeddings, with the ground truth given as text → image indices,
// so one metric serves COCO/Flickr30K (several captions per image: text t belongs to exactly one image) and the
// synthetic set (deduplicated captions: one text may describe several images). A query counts as found at K when
// any of its positives is among its top K: image→text, an image is found when any of its captions is; text→image,
// each caption is a query of its own, found when its image is (or, deduplicated, any image it describes).
//
// Tie rule (deterministic, index order): candidates are ranked by score, higher first, and equal scores by index,
// lower first, i.e. the order of a stable descending sort. A query's rank is the position of its first positive in
// that order. A collapsed model (every score equal) therefore gets chance-level recall, never 100%, and a query whose
// positives score NaN (a model with non-finite weights) is never found. Ranks are
// computed on the device in row chunks, so COCO's 5,000 × 25,000 similarity matrix is never held whole.
import { F, noGrad, Tensor, tidy } from "../torch/mod.ts";

/** Image-to-text and text-to-image recall@K in percent, the recall curves and how many queries were scored. */
export interface RetrievalResult {
  /** Recall in percent for each requested K, image queries over texts. */
  imageToText: Record<number, number>;
  /** Recall in percent for each requested K, text queries over images. */
  textToImage: Record<number, number>;
  /** R@k in percent for k = 1..curveK (entry k − 1): the recall curve. */
  imageToTextCurve: number[];
  textToImageCurve: number[];
  /** Queries scored (images with at least one text; texts with at least one image). */
  imageQueries: number;
  textQueries: number;
}

/**
 * Rank (0 = first) of the first positive of each query under the index-order tie rule. queries: (Q, E),
 * candidates: (N, E), both already normalised; positives[q] is non-empty.
 */
export function firstPositiveRanks(
  queries: Tensor,
  candidates: Tensor,
  positives: readonly (readonly number[])[],
): Int32Array {
  const count = candidates.size(0);
  const out = new Int32Array(positives.length);
  const chunk = Math.max(1, Math.floor(8_000_000 / Math.max(count, 1)));
  for (let start = 0; start < positives.length; start += chunk) {
    const rows = positives.slice(start, start + chunk);
    const width = Math.max(...rows.map((p) => p.length));
    // Padding repeats a row's first positive, which changes neither its best score nor its lowest best index.
    const padded = rows.flatMap((p) => Array.from({ length: width }, (_, k) => p[k] ?? p[0]));
    const ranks = noGrad(() =>
      tidy(() => {
        const device = queries.device;
        const sim = queries.narrow(0, start, rows.length).matmul(candidates.transpose(0, 1)); // (B, N)
        const posIdx = Tensor.fromArray(padded, [rows.length, width], { dtype: "int64", device }); // (B, P)
        const posScores = sim.gather(1, posIdx); // (B, P)
        const best = posScores.amax(1, true); // (B, 1)
        // Lowest index among the positives that reach the best score (the others are pushed past N).
        const bestIdx = posIdx.add(posScores.eq(best).logicalNot().to({ dtype: "int64" }).mul(count)).amin(1, true); // (B, 1)
        const index = Tensor.arange(0, count, 1, { device }).unsqueeze(0); // (1, N)
        const ahead = sim.gt(best).logicalOr(sim.eq(best).logicalAnd(index.lt(bestIdx))); // (B, N)
        // A NaN score compares false with everything, which would put its query's positive first: never found.
        const lost = best.squeeze(1).isfinite().logicalNot().to({ dtype: "int64" }).mul(NOT_FOUND); // (B)
        return ahead.sum(1).add(lost).toArray(); // (B)
      })
    );
    out.set(ranks, start);
  }
  return out;
}

/** The rank of a query whose best positive score is NaN or Inf: past any K. */
const NOT_FOUND = 1 << 30;

function curve(ranks: Int32Array, maxK: number): number[] {
  const hits = new Array<number>(maxK + 1).fill(0);
  for (const r of ranks) if (r < maxK) hits[r + 1] += 1;
  const out: number[] = [];
  let found = 0;
  for (let k = 1; k <= maxK; k++) {
    found += hits[k];
    out.push(ranks.length === 0 ? 0 : 100 * found / ranks.length);
  }
  return out;
}

/**
 * images: (I, E), texts: (T, E) embeddings (normalised here); textToImages[t] lists the images text t describes.
 * Images without any text and texts without any image are not queried (they stay in the gallery as distractors).
 */
export function retrievalRecall(
  images: Tensor,
  texts: Tensor,
  textToImages: readonly (readonly number[])[],
  ks: readonly number[] = [1, 5, 10],
  curveK = 50,
): RetrievalResult {
  const imageCount = images.size(0);
  const textCount = texts.size(0);
  if (textToImages.length !== textCount) {
    throw new Error(`retrieval: ${textCount} texts but ${textToImages.length} text→image entries`);
  }
  const textsOf: number[][] = Array.from({ length: imageCount }, () => []);
  textToImages.forEach((imagesOfText, t) => {
    for (const i of imagesOfText) {
      if (!(Number.isInteger(i) && i >= 0 && i < imageCount)) {
        throw new Error(`retrieval: text ${t} points at image ${i} of ${imageCount}`);
      }
      textsOf[i].push(t);
    }
  });
  const imageQueries = textsOf.flatMap((p, i) => (p.length > 0 ? [i] : []));
  const textQueries = textToImages.flatMap((p, t) => (p.length > 0 ? [t] : []));
  const [i2t, t2i] = noGrad(() =>
    tidy(() => {
      const i = F.normalize(images, { dim: -1 }); // (I, E)
      const t = F.normalize(texts, { dim: -1 }); // (T, E)
      const pick = (x: Tensor, rows: number[], all: number): Tensor =>
        rows.length === all
          ? x
          : x.indexSelect(0, Tensor.fromArray(rows, [rows.length], { dtype: "int64", device: x.device }));
      return [
        firstPositiveRanks(pick(i, imageQueries, imageCount), t, imageQueries.map((q) => textsOf[q])),
        firstPositiveRanks(pick(t, textQueries, textCount), i, textQueries.map((q) => textToImages[q])),
      ];
    })
  );
  const maxK = Math.max(curveK, ...ks);
  const i2tCurve = curve(i2t, maxK), t2iCurve = curve(t2i, maxK);
  const imageToText: Record<number, number> = {};
  const textToImage: Record<number, number> = {};
  for (const k of ks) {
    imageToText[k] = i2tCurve[k - 1];
    textToImage[k] = t2iCurve[k - 1];
  }
  return {
    imageToText,
    textToImage,
    imageToTextCurve: i2tCurve.slice(0, curveK),
    textToImageCurve: t2iCurve.slice(0, curveK),
    imageQueries: i2t.length,
    textQueries: t2i.length,
  };
}

/**
 * Retrieval ground truth for images whose caption i belongs to image i, with equal captions made one text: they embed
 * equally, so no ranking could tell which image owns a shared one (a single small red circle in the top left is one
 * of 420 single-object synthetic captions; MNIST has 10 captions in all). Image i's correct text is
 * texts[imageToText[i]], and a text's correct images are all of textToImages[t].
 */
export interface CaptionGroups {
  texts: string[];
  imageToText: Int32Array;
  textToImages: number[][];
}

export function groupEqualCaptions(captions: readonly string[]): CaptionGroups {
  const ids = new Map<string, number>();
  const texts: string[] = [];
  const textToImages: number[][] = [];
  const imageToText = new Int32Array(captions.length);
  captions.forEach((caption, i) => {
    let id = ids.get(caption);
    if (id === undefined) {
      id = texts.length;
      ids.set(caption, id);
      texts.push(caption);
      textToImages.push([]);
    }
    imageToText[i] = id;
    textToImages[id].push(i);
  });
  return { texts, imageToText, textToImages };
}
