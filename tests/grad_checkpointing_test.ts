// grad_checkpointing_test.ts: --grad-checkpointing (src/nn/checkpoint.ts). The same step with and without it must give every
// parameter the same gradient (within 1e-6), record one segment per checkpointed stack (student ViT per view, decoder
// per view, text tower), leak no native handle, and leave a step that runs under no_grad untouched; and the training
// loop with the option logs the losses of the loop without it.
import { clipLoss, detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import { CLIP } from "../src/models/clip.ts";
import { type ClipConfig, type DetailClipConfig, parseModelConfig } from "../src/models/configs.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { ActivationCheckpoints, withCheckpoints } from "../src/nn/checkpoint.ts";
import type { Module } from "../src/nn/module.ts";
import { liveTensors, manualSeed, noGrad, Tensor, tidy } from "../src/torch/mod.ts";
import { parseTrainOptions } from "../src/train/options.ts";
import { train } from "../src/train/loop.ts";
import { assert, assertEquals } from "./helpers.ts";

const detailClipConfig = parseModelConfig({
  kind: "detailclip",
  name: "checkpoint-test",
  embedDim: 16,
  vision: { imageSize: 64, patchSize: 8, width: 32, depth: 3, heads: 4 },
  text: { context: 8, vocab: 64, width: 32, layers: 2, heads: 4 },
  decoder: { depth: 2, heads: 4 },
  ibot: { outDim: 48, patchOutDim: 48, hiddenDim: 32, bottleneckDim: 16 },
  maskRatio: 0.5,
  maskCell: 2,
}, "test") as DetailClipConfig;

const clipConfig = parseModelConfig({
  kind: "clip",
  name: "checkpoint-test-clip",
  embedDim: 16,
  vision: { imageSize: 32, patchSize: 8, width: 32, depth: 2, heads: 4 },
  text: { context: 8, vocab: 64, width: 32, layers: 3, heads: 4 },
}, "test") as ClipConfig;

function batch(
  imageSize: number,
  context: number,
  vocab: number,
  size: number,
): { u: Tensor; v: Tensor; text: Tensor } {
  const u = Tensor.randn([size, 3, imageSize, imageSize]);
  const v = Tensor.randn([size, 3, imageSize, imageSize]);
  // EOT (the largest id) at a different position per caption, zero padding after it.
  const rows: number[] = [];
  for (let b = 0; b < size; b++) {
    for (let t = 0; t < context; t++) {
      rows.push(t < 2 + b ? 1 + ((7 * b + 3 * t) % (vocab - 2)) : t === 2 + b ? vocab - 1 : 0);
    }
  }
  return { u, v, text: Tensor.fromArray(rows, [size, context], { dtype: "int64" }) };
}

/** Every trainable parameter's gradient after `step` (the model's .grad cleared first), as flat arrays by name. */
function gradients(model: Module, step: () => void): Map<string, Float32Array | null> {
  model.zeroGrad();
  step();
  const out = new Map<string, Float32Array | null>();
  for (const [name, p] of model.namedParameters()) {
    if (!p.requiresGrad) continue;
    const grad = p.grad;
    out.set(name, grad === null ? null : new Float32Array(grad.toArray()));
    grad?.dispose();
  }
  model.zeroGrad();
  return out;
}

/**
 * Asserts equal gradients over the same set of parameters: per parameter, max |a − b| <= 1e-6 · max(1, max |a|). The
 * checkpointed backward takes the same sums in another order (the final norm of the student, say, is differentiated
 * once for the loss and once for the decoder, then added), so float32 values move by a few ulps. Returns the worst
 * absolute difference and the worst ratio to the bound.
 */
function assertSameGradients(
  plain: Map<string, Float32Array | null>,
  checkpointed: Map<string, Float32Array | null>,
): { absolute: number; ofBound: number } {
  assertEquals([...checkpointed.keys()], [...plain.keys()]);
  let absolute = 0;
  let ofBound = 0;
  let compared = 0;
  for (const [name, a] of plain) {
    const b = checkpointed.get(name)!;
    assertEquals(b === null, a === null, `${name}: gradient present without checkpointing but not with it, or back`);
    if (a === null || b === null) continue;
    let scale = 1;
    for (const value of a) scale = Math.max(scale, Math.abs(value));
    for (let i = 0; i < a.length; i++) {
      const diff = Math.abs(a[i] - b[i]);
      assert(diff <= 1e-6 * scale, `${name}[${i}]: ${a[i]} without checkpointing, ${b[i]} with it (largest ${scale})`);
      absolute = Math.max(absolute, diff);
      ofBound = Math.max(ofBound, diff / (1e-6 * scale));
    }
    compared++;
  }
  assert(compared > 20, `only ${compared} parameters had gradients`);
  return { absolute, ofBound };
}

Deno.test("DetailCLIP: a step with --grad-checkpointing gives the same gradients and leaks nothing", () => {
  manualSeed(3);
  const model = new DetailCLIP(detailClipConfig);
  const data = batch(64, 8, 64, 3);
  const step = (checkpoints: ActivationCheckpoints | null): void => {
    const ibot = new IBOTLoss({ outDim: 48, patchOutDim: 48 }); // fresh centers for each run
    tidy(() => {
      const loss = withCheckpoints(checkpoints, () => {
        const out = model.forwardTrain(data.u, data.v, data.text, null);
        return detailClipLoss(out, { u: data.u, v: data.v }, ibot, 0, { patchSize: 8 }).loss;
      });
      if (checkpoints === null) {
        loss.backward();
      } else {
        // The student ViT and the decoder for each view, and the text tower.
        assertEquals(checkpoints.segmentCount, 5);
        checkpoints.backward(loss);
        assertEquals(checkpoints.segmentCount, 0);
      }
    });
    ibot.dispose();
  };
  const plain = gradients(model, () => step(null));
  const before = liveTensors();
  const checkpointed = gradients(model, () => step(new ActivationCheckpoints()));
  assertEquals(liveTensors(), before, "live handles after a checkpointed step");
  const worst = assertSameGradients(plain, checkpointed);
  console.log(
    `worst difference ${worst.absolute.toExponential(2)} (${(100 * worst.ofBound).toFixed(0)}% of the bound)`,
  );
  for (const t of Object.values(data)) t.dispose();
  model.dispose();
});

Deno.test("CLIP: checkpointed ViT and text tower give the same gradients; accumulation over two backwards too", () => {
  manualSeed(4);
  const model = new CLIP(clipConfig);
  const data = batch(32, 8, 64, 4);
  const step = (checkpoints: ActivationCheckpoints | null): void => {
    // Two micro-batches accumulated into .grad, as --update-freq 2 does.
    for (const images of [data.u, data.v]) {
      tidy(() => {
        const loss = withCheckpoints(checkpoints, () => {
          const { imageEmbed, textEmbed, logitScale } = model.forward(images, data.text);
          return clipLoss({ imageU: imageEmbed, imageV: imageEmbed, text: textEmbed, logitScale }).loss;
        });
        if (checkpoints === null) loss.backward();
        else checkpoints.backward(loss);
      });
    }
  };
  const plain = gradients(model, () => step(null));
  const checkpoints = new ActivationCheckpoints();
  const checkpointed = gradients(model, () => step(checkpoints));
  assertSameGradients(plain, checkpointed);
  for (const t of Object.values(data)) t.dispose();
  model.dispose();
});

Deno.test("checkpointing records nothing under no_grad, and clear() frees an unused forward", () => {
  manualSeed(5);
  const model = new CLIP(clipConfig);
  const data = batch(32, 8, 64, 2);
  const checkpoints = new ActivationCheckpoints();
  const before = liveTensors();
  tidy(() => {
    withCheckpoints(checkpoints, () => noGrad(() => model.forward(data.u, data.text)));
  });
  assertEquals(checkpoints.segmentCount, 0);
  tidy(() => {
    withCheckpoints(checkpoints, () => model.forward(data.u, data.text));
  });
  assertEquals(checkpoints.segmentCount, 2); // the ViT and the text tower
  checkpoints.clear();
  assertEquals(liveTensors(), before, "live handles after clear()");
  for (const t of Object.values(data)) t.dispose();
  model.dispose();
});

Deno.test("train --grad-checkpointing logs the losses of the same run without it", async () => {
  const losses = async (extra: string[]): Promise<number[]> => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_gradckpt_" });
    const options = parseTrainOptions([
      ...["--batch-size", "4", "--max-steps", "3", "--print-freq", "1", "--eval-size", "0", "--threads", "1"],
      ...["--output-dir", dir, ...extra],
    ]);
    await train(options, () => {});
    const lines = Deno.readTextFileSync(`${dir}/metrics.jsonl`).trim().split("\n").map((l) => JSON.parse(l));
    Deno.removeSync(dir, { recursive: true });
    return lines.filter((l) => l.type === "interval").map((l) => l.loss as number);
  };
  const plain = await losses([]);
  const checkpointed = await losses(["--grad-checkpointing"]);
  assertEquals(plain.length, 3);
  assertEquals(checkpointed.length, 3);
  plain.forEach((loss, i) => {
    assert(Math.abs(loss - checkpointed[i]) <= 1e-5 * Math.abs(loss), `step ${i + 1}: ${loss} vs ${checkpointed[i]}`);
  });
});
