// retrieval.ts: image↔text retrieval recall@K from embeddings. A text may describe several images (deduplicated
// captions) and an image may have several captions (COCO, Flickr30K); a query counts as found at K when any of its
// positives is among its top K. Ties favour the query (only strictly higher-scoring negatives push it down).
import { F, noGrad, type Tensor, tidy } from "../torch/mod.ts";

export interface RetrievalResult {
  /** Recall in percent for each K, image queries over texts. */
  imageToText: Record<number, number>;
  /** Recall in percent for each K, text queries over images. */
  textToImage: Record<number, number>;
}

/**
 * images: (I, E), texts: (T, E) embeddings (normalised here); textToImages[t] lists the images text t describes.
 * Images without any text are not queried.
 */
export function retrievalRecall(
  images: Tensor,
  texts: Tensor,
  textToImages: readonly (readonly number[])[],
  ks: readonly number[] = [1, 5, 10],
): RetrievalResult {
  const imageCount = images.size(0);
  const textCount = texts.size(0);
  if (textToImages.length !== textCount) {
    throw new Error(`retrieval: ${textCount} texts but ${textToImages.length} text→image entries`);
  }
  const similarity = noGrad(() =>
    tidy(() => {
      const i = F.normalize(images, { dim: -1 });
      const t = F.normalize(texts, { dim: -1 });
      return i.matmul(t.transpose(0, 1)).to({ dtype: "float64" }).toArray(); // (I, T) row-major
    })
  );
  const textsOf: number[][] = Array.from({ length: imageCount }, () => []);
  textToImages.forEach((imagesOfText, t) => {
    for (const i of imagesOfText) {
      if (!(i >= 0 && i < imageCount)) throw new Error(`retrieval: text ${t} points at image ${i} of ${imageCount}`);
      textsOf[i].push(t);
    }
  });
  // Rank of the best positive = number of negatives scoring strictly higher than it.
  const rankOf = (score: (j: number) => number, count: number, positives: readonly number[]): number => {
    const positive = new Set(positives);
    let best = -Infinity;
    for (const p of positives) best = Math.max(best, score(p));
    let rank = 0;
    for (let j = 0; j < count; j++) if (!positive.has(j) && score(j) > best) rank += 1;
    return rank;
  };
  const i2t: number[] = [];
  for (let i = 0; i < imageCount; i++) {
    if (textsOf[i].length > 0) i2t.push(rankOf((t) => similarity[i * textCount + t], textCount, textsOf[i]));
  }
  const t2i: number[] = [];
  for (let t = 0; t < textCount; t++) {
    if (textToImages[t].length > 0) t2i.push(rankOf((i) => similarity[i * textCount + t], imageCount, textToImages[t]));
  }
  const recall = (ranks: number[], k: number): number =>
    ranks.length === 0 ? 0 : 100 * ranks.filter((r) => r < k).length / ranks.length;
  const imageToText: Record<number, number> = {};
  const textToImage: Record<number, number> = {};
  for (const k of ks) {
    imageToText[k] = recall(i2t, k);
    textToImage[k] = recall(t2i, k);
  }
  return { imageToText, textToImage };
}
