// library_api_test.ts: the package as a library user sees it: everything comes from mod.ts (no src/ path, no test
// helper), so an export that goes missing or a signature that drifts breaks here. It builds a tiny model from a preset,
// learns a small BPE vocabulary, saves both as a checkpoint (or trains two steps with train()), loads the checkpoint
// back for evaluation, embeds two image files and three captions and prints their cosine-similarity matrix.
import {
  buildPreset,
  ClipTokenizer,
  DatasetError,
  encodePng,
  exportBackbone,
  F,
  listCheckpoints,
  liveTensors,
  loadEvalImages,
  loadEvalModel,
  loadSafeTensors,
  noGrad,
  presetNames,
  saveModelCheckpoint,
  syntheticSample,
  tidy,
  train,
  trainBpe,
  trainOptions,
} from "../mod.ts";

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

/** Two PNG files of synthetic shapes in `dir`, larger than the models' input (the eval transform resizes and crops). */
function writeImages(dir: string): string[] {
  return [0, 1].map((i) => {
    const sample = syntheticSample("val", i, { size: 80 });
    const file = `${dir}/image-${i}.png`;
    Deno.writeFileSync(file, encodePng(sample.width, sample.height, sample.pixels, "rgb"));
    return file;
  });
}

const CAPTIONS = ["a large red circle in the center", "a small blue square in the top left", "a green star"];

/** Loads `checkpoint`, embeds the images and CAPTIONS, prints and checks the (2, 3) cosine-similarity matrix. */
function checkSimilarities(checkpoint: string, images: string[], options: { ema?: boolean } = {}): void {
  const baseline = liveTensors();
  const encoder = loadEvalModel(checkpoint, { ema: options.ema });
  try {
    const similarity = noGrad(() =>
      tidy(() => {
        const pixels = loadEvalImages(images, { imageSize: encoder.imageSize, normalize: encoder.normalize });
        const side = encoder.imageSize;
        check(
          pixels.shape.join() === `2,3,${side},${side}`,
          `images: [${pixels.shape}], expected [2, 3, ${side}, ${side}]`,
        );
        const imageEmbeddings = F.normalize(encoder.encodeImage(pixels), { dim: -1 }); // (2, E)
        const textEmbeddings = F.normalize(encoder.encodeText(encoder.tokenize(CAPTIONS)), { dim: -1 }); // (3, E)
        for (const n of imageEmbeddings.square().sum(-1).sqrt().toArray()) {
          check(Math.abs(n - 1) < 1e-4, `image embedding norm ${n}, expected 1`);
        }
        for (const n of textEmbeddings.square().sum(-1).sqrt().toArray()) {
          check(Math.abs(n - 1) < 1e-4, `text embedding norm ${n}, expected 1`);
        }
        return imageEmbeddings.matmul(textEmbeddings.transpose(0, 1)); // (2, 3)
      })
    );
    try {
      check(similarity.shape.join() === "2,3", `similarity: [${similarity.shape}], expected [2, 3]`);
      const values = similarity.toArray();
      console.log(`cosine similarity, images x captions (${checkpoint.split("/").pop()}):`);
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
}

Deno.test("library API (mod.ts only): a saved preset model -> two images x three captions similarity matrix", () => {
  const dir = Deno.makeTempDirSync({ prefix: "detailclip-library-" });
  try {
    check(presetNames().includes("CLIP_tiny_synthetic"), `presets: ${presetNames().join(", ")}`);
    const corpus = Array.from({ length: 64 }, (_, i) => syntheticSample("train", i, { size: 16 }).caption);
    const tokenizer = new ClipTokenizer(trainBpe(corpus, 600));
    const model = buildPreset("CLIP_tiny_synthetic");
    let path: string;
    try {
      path = saveModelCheckpoint(dir, model, tokenizer, { step: 0 });
    } finally {
      model.dispose();
    }
    const images = writeImages(dir);
    checkSimilarities(path, images);

    // An image that does not decode is refused by name, with the loader's reason.
    Deno.writeTextFileSync(`${dir}/not-an-image.png`, "plain text");
    try {
      loadEvalImages([images[0], `${dir}/not-an-image.png`], { imageSize: 64 }).dispose();
      throw new Error("loadEvalImages accepted a text file");
    } catch (error) {
      check(error instanceof DatasetError, `expected DatasetError, got ${error}`);
      check((error as Error).message.includes("not-an-image.png"), (error as Error).message);
    }

    // The backbone export: the vision tower under timm's key names (no `visual.` prefix), as safetensors.
    const exported = exportBackbone(path, `${dir}/backbone.safetensors`);
    const backbone = loadSafeTensors(`${dir}/backbone.safetensors`);
    try {
      check(backbone.size === exported.tensors && backbone.size > 0, `backbone: ${backbone.size} tensors`);
      for (const key of ["cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"]) {
        check(backbone.has(key), `backbone lacks ${key}: ${[...backbone.keys()].slice(0, 8).join(", ")}, ...`);
      }
    } finally {
      for (const t of backbone.values()) t.dispose();
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("library API (mod.ts only): train() two steps, then its checkpoint's EMA towers embed", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "detailclip-library-train-" });
  try {
    const options = trainOptions({
      outputDir: `${dir}/run`,
      syntheticSize: 32,
      batchSize: 8,
      epochs: 1,
      maxSteps: 2,
      evalSize: 0,
      threads: 1,
      printFreq: 1,
    }, "library test");
    const lines: string[] = [];
    const summary = await train(options, (line) => lines.push(line));
    check(summary.steps === 2, `train() ran ${summary.steps} steps, expected 2:\n${lines.join("\n")}`);
    check(Number.isFinite(summary.loss_last), `last loss ${summary.loss_last}`);
    const checkpoints = listCheckpoints(`${dir}/run`);
    check(checkpoints.length === 1 && checkpoints[0].step === 2, `checkpoints: ${JSON.stringify(checkpoints)}`);
    checkSimilarities(checkpoints[0].path, writeImages(dir), { ema: true });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
