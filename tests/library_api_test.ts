// library_api_test.ts: the package as a library user sees it: everything comes from mod.ts (no src/ path, no test
// helper), so an export that goes missing or a signature that drifts breaks here. It builds a tiny model from a preset,
// learns a small BPE vocabulary, saves both as a checkpoint, loads it back for evaluation, embeds two image files and
// three captions and prints their cosine-similarity matrix.
import {
  buildPreset,
  ClipTokenizer,
  encodePng,
  F,
  liveTensors,
  loadEvalImages,
  loadEvalModel,
  noGrad,
  presetNames,
  saveModelCheckpoint,
  syntheticSample,
  tidy,
  trainBpe,
} from "../mod.ts";

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

Deno.test("library API (mod.ts only): checkpoint -> two images x three captions similarity matrix", () => {
  const dir = Deno.makeTempDirSync({ prefix: "detailclip-library-" });
  const baseline = liveTensors();
  try {
    check(presetNames().includes("CLIP_tiny_synthetic"), `presets: ${presetNames().join(", ")}`);

    // A checkpoint made with the public API: a preset model and a vocabulary learned from captions.
    const corpus = Array.from({ length: 64 }, (_, i) => syntheticSample("train", i, { size: 16 }).caption);
    const tokenizer = new ClipTokenizer(trainBpe(corpus, 600));
    const model = buildPreset("CLIP_tiny_synthetic");
    let path: string;
    try {
      path = saveModelCheckpoint(dir, model, tokenizer, { step: 0 });
    } finally {
      model.dispose();
    }

    // Two image files, larger than the model's input, so the eval transform resizes and centre-crops them.
    const images = [0, 1].map((i) => {
      const sample = syntheticSample("val", i, { size: 80 });
      const file = `${dir}/image-${i}.png`;
      Deno.writeFileSync(file, encodePng(sample.width, sample.height, sample.pixels, "rgb"));
      return file;
    });
    const captions = ["a large red circle in the center", "a small blue square in the top left", "a green star"];

    const encoder = loadEvalModel(path);
    try {
      const similarity = noGrad(() =>
        tidy(() => {
          const pixels = loadEvalImages(images, { imageSize: encoder.imageSize, normalize: encoder.normalize });
          check(
            pixels.shape.join() === `2,3,${encoder.imageSize},${encoder.imageSize}`,
            `images: [${pixels.shape}]`,
          );
          const imageEmbeddings = F.normalize(encoder.encodeImage(pixels), { dim: -1 }); // (2, E)
          const textEmbeddings = F.normalize(encoder.encodeText(encoder.tokenize(captions)), { dim: -1 }); // (3, E)
          const rowNorms = imageEmbeddings.square().sum(-1).sqrt().toArray(); // (2)
          for (const n of rowNorms) check(Math.abs(n - 1) < 1e-4, `image embedding norm ${n}, expected 1`);
          return imageEmbeddings.matmul(textEmbeddings.transpose(0, 1)); // (2, 3)
        })
      );
      try {
        check(similarity.shape.join() === "2,3", `similarity: [${similarity.shape}], expected [2, 3]`);
        const values = similarity.toArray();
        console.log("cosine similarity, images x captions:");
        for (let i = 0; i < 2; i++) {
          console.log(`  image ${i}: ${values.slice(3 * i, 3 * i + 3).map((v) => v.toFixed(4)).join("  ")}`);
        }
        for (const v of values) check(Number.isFinite(v) && v >= -1 - 1e-5 && v <= 1 + 1e-5, `similarity ${v}`);
      } finally {
        similarity.dispose();
      }
    } finally {
      encoder.dispose();
    }
    check(liveTensors() === baseline, `live tensors: ${liveTensors()}, baseline ${baseline}`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
