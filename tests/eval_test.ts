// eval_test.ts: the evaluation metrics (src/eval/) against cases small enough to compute by hand: zero-shot top-1,
// top-5 and mean per-class accuracy with ties, retrieval recall with several captions per image and several images
// per caption (ties settled by index order), the zero-shot classifier's normalise-mean-normalise recipe with synonyms,
// the segmentation probe's mIoU and the linear probe on separable features. Every test checks that it left no
// native handle behind.
import { runEval as runEvalSync } from "../cli/eval.ts";
import { runExport } from "../cli/export.ts";
import { fitLogistic, linearProbe, meanIoU } from "../src/eval/probe.ts";
import { buildPreset } from "../src/models/build.ts";
import { saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { retrievalRecall } from "../src/eval/retrieval.ts";
import { topKCorrect, zeroShotClassifier, zeroShotMetrics } from "../src/eval/zeroshot.ts";
import { liveTensors, Tensor, tidy } from "../src/torch/mod.ts";
import { saveUntrainedCheckpoint } from "./eval_checkpoint.ts";
import { assert, assertClose, assertEquals, pylibEnv, quietly, timmInstalled } from "./helpers.ts";

function test(name: string, fn: () => void): void {
  Deno.test(name, () => {
    const before = liveTensors();
    tidy(fn);
    assertEquals(liveTensors(), before, "live tensors after the test");
  });
}

// ---- zero-shot metrics ------------------------------------------------------------------------------------------

// Six samples over six classes; the comment gives the true class's rank (0 = top-1) under the tie rule
// "strictly higher scores, then equal scores at a lower index, go first".
const LOGITS = [
  [9, 1, 2, 3, 4, 5], // label 0: rank 0
  [0, 1, 2, 3, 4, 5], // label 0: rank 5 (outside the top 5)
  [5, 4, 3, 2, 1, 0], // label 1: rank 1
  [1, 1, 0, 0, 0, 0], // label 1: tied with class 0, which has the lower index: rank 1
  [3, 3, 3, 3, 3, 3], // label 2: all tied, classes 0 and 1 go first: rank 2
  [0, 0, 0, 7, 0, 7], // label 5: tied with class 3 (lower index): rank 1
];
const LABELS = [0, 0, 1, 1, 2, 5];

test("zero-shot: top-1, top-5 and mean per-class by hand, with ties settled by the lower class index", () => {
  const logits = Tensor.fromArray(LOGITS.flat(), [6, 6]);
  const labels = Tensor.fromArray(LABELS, [6], { dtype: "int64" });
  const r = zeroShotMetrics(logits, labels);
  // top-1: only sample 0 (rank 0). top-5: every rank < 5, i.e. all but sample 1.
  assertClose(r.top1, 100 / 6, { rtol: 1e-12 });
  assertClose(r.top5, 500 / 6, { rtol: 1e-12 });
  // Per-class recall: class 0 → 1/2, class 1 → 0/2, class 2 → 0/1, class 5 → 0/1; absent classes 3, 4 don't count.
  assertClose(r.meanPerClass, 100 * (0.5 + 0 + 0 + 0) / 4, { rtol: 1e-12 });
  assertEquals(r.count, 6);
  // Each k separately: ranks [0, 5, 1, 1, 2, 1].
  const ranks = [0, 5, 1, 1, 2, 1];
  for (const k of [1, 2, 3, 5, 6]) {
    const got = topKCorrect(logits, labels, k).toArray().map(Boolean);
    assertEquals(got, ranks.map((rank) => rank < k), `top-${k}`);
  }
});

test("zero-shot: a tie with a lower-indexed class loses, with a higher-indexed class wins; NaN is never correct", () => {
  const logits = Tensor.fromArray([2, 2, 0, 0, 2, 2, NaN, 0, 0], [3, 3]);
  const got = topKCorrect(logits, Tensor.fromArray([0, 1, 0], [3], { dtype: "int64" }), 1).toArray().map(Boolean);
  assertEquals(got, [true, true, false]);
  // Row 1 is [0, 2, 2] with label 1: class 2 ties but has the higher index, so class 1 keeps rank 0.
});

test("zero-shot: top-k never decreases with k", () => {
  const logits = Tensor.randn([40, 10]);
  const labels = Tensor.randint(0, 10, [40]);
  let previous = -1;
  for (let k = 1; k <= 10; k++) {
    const hits = topKCorrect(logits, labels, k).toArray().filter(Boolean).length;
    assert(hits >= previous, `top-${k} hits ${hits} < top-${k - 1} hits ${previous}`);
    previous = hits;
  }
  assertEquals(previous, 40, "top-C is every sample");
});

// ---- retrieval --------------------------------------------------------------------------------------------------

// Scores in quarters: S[i][t] = LEVELS[i][t] / 4 exactly. Texts are basis vectors of R^20; each image puts its four
// scores in dims 0..3 and pads dims 4..19 with 0.25s so its squared norm is exactly 1, so normalising changes
// nothing and every tie below is an exact tie in float32.
const LEVELS = [
  [0, 2, 2, 2], // image 0: captions 0 and 1
  [2, 2, 1, 0], // image 1: caption 2
  [2, 0, 0, 1], // image 2: captions 2 and 3
  [3, 0, 0, 0], // image 3: no caption (a distractor for text queries, never a query itself)
];
const TEXT_TO_IMAGES = [[0], [0], [1, 2], [2]];

function retrievalEmbeddings(): { images: Tensor; texts: Tensor } {
  const dims = 20;
  const images = LEVELS.flatMap((row) => {
    const out = new Array<number>(dims).fill(0);
    row.forEach((level, t) => (out[t] = level / 4));
    const pads = 16 - row.reduce((sum, level) => sum + level * level, 0); // 16·(1 − Σ s²) pads of 0.25
    for (let p = 0; p < pads; p++) out[4 + p] = 0.25;
    return out;
  });
  const texts = Array.from({ length: 4 }, (_, t) => Array.from({ length: dims }, (_, d) => (d === t ? 1 : 0)));
  return { images: Tensor.fromArray(images, [4, dims]), texts: Tensor.fromArray(texts.flat(), [4, dims]) };
}

test("retrieval: recall@K by hand with several captions per image and several images per caption", () => {
  const { images, texts } = retrievalEmbeddings();
  const r = retrievalRecall(images, texts, TEXT_TO_IMAGES, [1, 2, 3, 4, 5, 10]);
  // I2T (images 0–2 are queries; image 3 has no caption). Rank = candidates ahead of the first positive in a stable
  // descending sort: higher scores, and equal scores at a lower index.
  //   image 0: best positive 2 (caption 1); captions 2 and 3 tie at 2 but have higher indices → rank 0
  //   image 1: positive 1 (caption 2); captions 0, 1 score 2 → rank 2
  //   image 2: best positive 1 (caption 3); caption 0 scores 2 → rank 1
  assertClose([1, 2, 3, 5, 10].map((k) => r.imageToText[k]), [100 / 3, 200 / 3, 100, 100, 100], { rtol: 1e-12 });
  // T2I over all four images:
  //   caption 0 (image 0, score 0): images 1, 2, 3 score 2, 2, 3 → rank 3
  //   caption 1 (image 0, score 2): image 1 ties at 2 but has the higher index → rank 0
  //   caption 2 (images 1, 2; best 1): image 0 scores 2 → rank 1
  //   caption 3 (image 2, score 1): image 0 scores 2 → rank 1
  assertClose([1, 2, 3, 4, 10].map((k) => r.textToImage[k]), [25, 75, 75, 100, 100], { rtol: 1e-12 });
});

test("retrieval: recall@K never decreases with K", () => {
  const images = Tensor.randn([30, 8]);
  const texts = Tensor.randn([20, 8]);
  const textToImages = Array.from({ length: 20 }, (_, t) => (t % 3 === 0 ? [t, t + 1] : [t]));
  const ks = Array.from({ length: 30 }, (_, i) => i + 1);
  const r = retrievalRecall(images, texts, textToImages, ks);
  for (let i = 1; i < ks.length; i++) {
    assert(r.imageToText[ks[i]] >= r.imageToText[ks[i - 1]], `I2T R@${ks[i]} < R@${ks[i - 1]}`);
    assert(r.textToImage[ks[i]] >= r.textToImage[ks[i - 1]], `T2I R@${ks[i]} < R@${ks[i - 1]}`);
  }
  assertEquals(r.textToImage[30], 100, "T2I R@(all images)");
});

// ---- zero-shot classifier ---------------------------------------------------------------------------------------

// A text encoder that looks prompts up in a table: tokenize gives each prompt's row index, encodeText gathers rows.
const PROMPT_VECTORS: Record<string, [number, number]> = {
  "x a": [3, 4],
  "y a": [1, 0],
  "x b": [0, 2],
  "y b": [0, 1],
  "x c": [1, 0],
  "y c": [1, 1],
};
const PROMPTS = Object.keys(PROMPT_VECTORS);

function tableEncoder(): { encodeText(tokens: Tensor): Tensor; table: Tensor } {
  const table = Tensor.fromArray(PROMPTS.flatMap((p) => PROMPT_VECTORS[p]), [PROMPTS.length, 2]);
  return { table, encodeText: (tokens: Tensor): Tensor => table.indexSelect(0, tokens.reshape([-1])) };
}

const tokenizeTable = (texts: string[]): Tensor =>
  Tensor.fromArray(texts.map((t) => PROMPTS.indexOf(t)), [texts.length, 1], { dtype: "int64" });

/** normalise each, mean, normalise: the recipe of docs/evaluation.md#zero-shot-classification in float64 JS. */
function recipe(vectors: [number, number][]): number[] {
  const unit = (v: number[]): number[] => v.map((x) => x / Math.hypot(...v));
  const units = vectors.map(unit);
  return unit([0, 1].map((d) => units.reduce((s, u) => s + u[d], 0) / units.length));
}

test("zero-shot classifier: normalise, mean, normalise (not the mean of raw embeddings)", () => {
  const encoder = tableEncoder();
  const classifier = zeroShotClassifier(encoder, tokenizeTable, ["a"], ["x {}", "y {}"]);
  // Units (0.6, 0.8) and (1, 0); mean (0.8, 0.4); normalised (2, 1)/√5. The raw mean (2, 2) would give (1, 1)/√2.
  assertClose(classifier.toArray(), [2 / Math.sqrt(5), 1 / Math.sqrt(5)], { rtol: 1e-6 });
  assertClose(recipe([[3, 4], [1, 0]]), [2 / Math.sqrt(5), 1 / Math.sqrt(5)], { rtol: 1e-12 });
});

test("zero-shot classifier: a list-valued label averages every template × synonym", () => {
  const encoder = tableEncoder();
  const classifier = zeroShotClassifier(encoder, tokenizeTable, ["a", ["b", "c"]], ["x {}", "y {}"]);
  assertEquals(classifier.shape, [2, 2]);
  // Units (0, 1), (0, 1), (1, 0), (1, 1)/√2 → mean ((1 + 1/√2)/4, (2 + 1/√2)/4) → normalised.
  const s = 1 / Math.SQRT2;
  const mean = [(1 + s) / 4, (2 + s) / 4];
  const expected = mean.map((x) => x / Math.hypot(...mean));
  assertClose(classifier.toArray().slice(2), expected, { rtol: 1e-6 });
  assertClose(recipe([[0, 2], [0, 1], [1, 0], [1, 1]]), expected, { rtol: 1e-12 });
  // Averaging per synonym first and then across synonyms would give a different (wrong) answer here.
  const perSynonym = [recipe([[0, 2], [0, 1]]), recipe([[1, 0], [1, 1]])];
  const wrong = recipe(perSynonym as [number, number][]);
  assert(Math.abs(wrong[0] - expected[0]) > 1e-3, "the test distinguishes per-synonym averaging");
});

// ---- probes -----------------------------------------------------------------------------------------------------

test("mIoU by hand: per-class IoU, ignored pixels skipped, absent classes left out of the mean", () => {
  // truth:     0 0 1 1 255 2   predicted: 0 1 1 1 0 0
  // class 0: hit 1, pred 3 (the ignored pixel is skipped: pred 2), truth 2 → IoU 1/(2+2−1) = 1/3
  // class 1: hit 2, pred 3, truth 2 → 2/3; class 2: hit 0, pred 0, truth 1 → 0; class 3: absent → NaN, not counted
  const r = meanIoU([0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 255, 2], 4);
  assertClose(r.iou.slice(0, 3), [100 / 3, 200 / 3, 0], { rtol: 1e-12 });
  assert(Number.isNaN(r.iou[3]), "class 3 neither occurs nor is predicted");
  assertClose(r.mIoU, 100 / 3, { rtol: 1e-12 });
  assertClose(r.pixelAccuracy, 60, { rtol: 1e-12 });
});

test("linear probe: separable classes are learnt exactly, and the L2 grid is searched", () => {
  // Class c sits at 3·e_c plus small noise: any reasonable probe gets 100%.
  const make = (n: number, seed: number): { cls: Tensor; labels: Int32Array; dispose(): void } => {
    const labels = Int32Array.from({ length: n }, (_, i) => (i * 7 + seed) % 4);
    const base = Tensor.fromArray(Array.from(labels).flatMap((c) => [0, 1, 2, 3, 4].map((d) => (d === c ? 3 : 0))), [
      n,
      5,
    ]);
    const cls = base.add(Tensor.randn([n, 5]).mul(0.1)).keep();
    return { cls, labels, dispose: () => cls.dispose() };
  };
  const train = make(80, 0), test = make(40, 1);
  try {
    const r = linearProbe({ ...train, patches: null, masks: null }, { ...test, patches: null, masks: null }, {
      classes: 4,
      l2Grid: [0, 1e-2],
      iterations: 100,
    });
    assertEquals(r.top1, 100);
    assertEquals(r.grid.map((g) => g.l2), [0, 1e-2]);
    assertEquals(r.trainSize, 80);
    const fit = fitLogistic(train.cls, Tensor.fromArray(train.labels, [80], { dtype: "int64" }), {
      classes: 4,
      l2: 0,
      iterations: 50,
    });
    assertEquals(fit.weight.shape, [5, 4]);
    fit.weight.dispose();
    fit.bias.dispose();
  } finally {
    train.dispose();
    test.dispose();
  }
});

// ---- the command ------------------------------------------------------------------------------------------------

test("deno task eval: zeroshot and retrieval on a checkpoint rebuilt from its meta, results as JSON", () => {
  // An untrained CLIP_tiny_synthetic saved the way the training loop saves it (tests/eval_checkpoint.ts).
  const dir = Deno.makeTempDirSync({ prefix: "dc_eval_test_" });
  try {
    const path = saveUntrainedCheckpoint(dir);
    for (const command of ["zeroshot", "retrieval"]) {
      const out = `${dir}/${command}.json`;
      const code = quietly(() =>
        runEvalSync([command, "--checkpoint", path, "--size", "24", "--batch-size", "10", "--out", out])
      );
      assertEquals(code, 0, `${command} exit code`);
      const record = JSON.parse(Deno.readTextFileSync(out));
      assertEquals(record.command, command);
      if (command === "zeroshot") {
        assertEquals(record.results.count, 24);
        assert(record.results.top5 >= record.results.top1, "top-5 >= top-1");
      } else {
        assertEquals(record.results.images, 24);
        assert(record.results.imageToText["10"] >= record.results.imageToText["1"], "R@10 >= R@1");
      }
    }
    // --ema needs DetailCLIP: a clear error and the checkpoint status 6 (docs/errors.md), not a crash.
    const code = quietly(() => runEvalSync(["zeroshot", "--checkpoint", path, "--ema", "--size", "4"]));
    assertEquals(code, 6, "--ema on a CLIP checkpoint");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

test("deno task export backbone: timm keys and shapes, a strict load into timm's ViT (or a timm-style one)", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc_export_test_" });
  const model = buildPreset("tiny_synthetic");
  try {
    const tensors = new Map<string, Tensor>();
    for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
    const path = saveCheckpoint(dir, { tensors, meta: { step: 0, model_config: model.config, tokenizer_merges: [] } });
    const { vision } = model.config;
    for (const teacher of [false, true]) {
      const out = `${dir}/backbone-${teacher}.safetensors`;
      const args = ["backbone", "--checkpoint", path, "--out", out, ...(teacher ? ["--teacher"] : [])];
      assertEquals(quietly(() => runExport(args)), 0, "export exit code");
      const dims = [vision.width, vision.depth, vision.patchSize, vision.imageSize];
      const sizes = [...dims.map(String), "--heads", String(vision.heads)];
      const result = new Deno.Command("/usr/bin/python3", {
        args: ["tests/export_check.py", out, ...sizes],
        env: pylibEnv(),
      }).outputSync();
      const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      assert(result.success, `export_check.py (teacher=${teacher}) failed:\n${text}`);
      assert(text.startsWith(timmInstalled() ? "ok 30 (timm 1.0.29)" : "ok 30 (timm-style module)"), text);
    }
  } finally {
    model.dispose();
    Deno.removeSync(dir, { recursive: true });
  }
});
