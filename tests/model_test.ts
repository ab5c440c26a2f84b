// model_test.ts: the assembled models: parameter counts of every preset (docs/model.md#parameter-counts, built on the
// meta device), gradients reach exactly the trainable parameters, the teacher starts as a copy and moves by EMA, state
// dicts round-trip with the official keys, and a whole training step leaks no native handle.
import { buildPreset } from "../src/models/build.ts";
import { type DetailClipConfig, modelPreset, parseModelConfig, presetNames } from "../src/models/configs.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import { StateDictError } from "../src/nn/mod.ts";
import { liveTensors, manualSeed, noGrad, Tensor, tidy, withDefaultDevice } from "../src/torch/mod.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

/** A small 64 px / patch 8 configuration: an 8×8 grid with 2×2 cells exercises a non-official grid. */
const small: DetailClipConfig = parseModelConfig({
  kind: "detailclip",
  name: "small-test",
  embedDim: 16,
  vision: { imageSize: 64, patchSize: 8, width: 32, depth: 2, heads: 4 },
  text: { context: 8, vocab: 64, width: 32, layers: 1, heads: 4 },
  decoder: { depth: 1, heads: 4 },
  ibot: { outDim: 48, patchOutDim: 48, hiddenDim: 32, bottleneckDim: 16 },
  maskRatio: 0.5,
  maskCell: 2,
}, "test") as DetailClipConfig;

function batch(config: DetailClipConfig, size: number): { u: Tensor; v: Tensor; text: Tensor } {
  const { imageSize } = config.vision;
  const u = Tensor.randn([size, 3, imageSize, imageSize]);
  const v = Tensor.randn([size, 3, imageSize, imageSize]);
  const ids = Tensor.randint(1, config.text.vocab - 1, [size, config.text.context]);
  // EOT (the largest id) at a different position per caption, zero padding after it.
  const rows: number[] = [];
  const values = ids.toArray();
  for (let b = 0; b < size; b++) {
    const eot = 2 + b;
    for (let t = 0; t < config.text.context; t++) {
      rows.push(t < eot ? values[b * config.text.context + t] : t === eot ? config.text.vocab - 1 : 0);
    }
  }
  ids.dispose();
  return { u, v, text: Tensor.fromArray(rows, [size, config.text.context], { dtype: "int64" }) };
}

Deno.test("parameter counts of every preset (docs/model.md for ViT-B/16)", () => {
  const expected: Record<string, [number, number]> = {
    DetailCLIP_VITB16: [299_127_553, 165_693_697],
    CLIP_VITB16: [149_619_969, 149_029_377],
  };
  for (const name of presetNames()) {
    const model = withDefaultDevice("meta", () => buildPreset(name));
    const total = model.numParameters();
    const trainable = model.numParameters({ trainableOnly: true });
    model.dispose();
    assert(total > trainable && trainable > 0, `${name}: total ${total}, trainable ${trainable}`);
    if (expected[name]) assertEquals([total, trainable], expected[name], name);
    const config = modelPreset(name);
    if (config.kind === "detailclip") {
      // The teacher duplicates exactly the student ViT, text blocks, projections and iBOT head, all frozen.
      const clip = withDefaultDevice("meta", () => buildPreset(name.replace("DetailCLIP", "CLIP")));
      const clipTotal = clip.numParameters();
      clip.dispose();
      assert(total > 2 * (clipTotal - 2e7), `${name}: implausible total ${total} vs CLIP ${clipTotal}`);
    }
  }
});

Deno.test("a training step gives a gradient to every trainable parameter and to no frozen one", () => {
  manualSeed(1);
  const model = new DetailCLIP(small);
  const ibot = new IBOTLoss({ outDim: 48, patchOutDim: 48 });
  const before = liveTensors();
  tidy(() => {
    const { u, v, text } = batch(small, 3);
    const out = model.forwardTrain(u, v, text, 0.99);
    const losses = detailClipLoss(out, { u, v }, ibot, 0, { patchSize: 8 });
    assert(Number.isFinite(losses.loss.item()), "loss is not finite");
    losses.loss.backward();
  });
  const withGrad: string[] = [];
  const frozenWithGrad: string[] = [];
  const trainableWithout: string[] = [];
  for (const [name, p] of model.namedParameters()) {
    const grad = p.grad;
    if (grad !== null) {
      withGrad.push(name);
      grad.dispose();
    }
    if (p.requiresGrad && grad === null) trainableWithout.push(name);
    if (!p.requiresGrad && grad !== null) frozenWithGrad.push(name);
  }
  assertEquals(trainableWithout, [], "trainable parameters without a gradient");
  assertEquals(frozenWithGrad, [], "frozen parameters with a gradient");
  for (const frozen of ["visual.patch_embed.proj.weight", "decoder_pos_embed", "ibot_head.last_layer.weight_g"]) {
    assert(!withGrad.includes(frozen), `${frozen} must be frozen`);
  }
  assert(withGrad.every((n) => !/(_ema|_e)\./.test(n) && !n.endsWith("_e")), "the teacher must get no gradient");
  model.zeroGrad();
  assertEquals(liveTensors(), before, "handles after a step (no leak)");
  ibot.dispose();
  model.dispose();
});

Deno.test("the teacher starts as a copy of the student and follows it by EMA", () => {
  manualSeed(2);
  const model = new DetailCLIP(small);
  const { teacher, student } = model.emaPairs();
  tidy(() => {
    for (let i = 0; i < teacher.length; i++) assert(teacher[i].allclose(student[i], 0, 0), `pair ${i} differs`);
    const target = student[5].clone();
    noGrad(() => student[5].add_(1));
    const old = teacher[5].clone();
    model.updateTeacher(0.9);
    const expected = old.mul(0.9).add(target.add(1).mul(0.1));
    assert(teacher[5].allclose(expected, 1e-6, 1e-6), "teacher ≠ 0.9·teacher + 0.1·student");
  });
  model.dispose();
});

Deno.test("state dict round trip with official keys; strict load reports what does not fit", () => {
  manualSeed(3);
  const a = new DetailCLIP(small);
  manualSeed(4);
  const b = new DetailCLIP(small);
  const state = a.stateDict();
  assert(state.has("ibot_head.last_layer2.weight_v") && state.has("ibot_head.last_layer.weight_v"), "shared keys");
  assert(!state.has("causal_mask"), "the text mask is not state");
  b.loadStateDict(state);
  for (const [name, value] of b.stateDict()) assert(value.allclose(state.get(name)!, 0, 0), `${name} differs`);
  const broken = new Map(state);
  broken.delete("logit_scale");
  broken.set("unexpected.weight", state.get("logit_scale")!);
  broken.set("visual.pos_embed", state.get("mask_token")!);
  const error = assertThrows(() => b.loadStateDict(broken), StateDictError, ["logit_scale", "unexpected.weight"]);
  assertEquals(error.report.mismatched.map((m) => m.name), ["visual.pos_embed"]);
  const report = b.loadStateDict(broken, { strict: false });
  assertEquals(report.missing, ["logit_scale"]);
  a.dispose();
  b.dispose();
});

Deno.test("mask ratio 0 trains without a crash; eval mode encodes all patches", () => {
  manualSeed(5);
  const model = new DetailCLIP({ ...small, maskRatio: 0 });
  const ibot = new IBOTLoss({ outDim: 48, patchOutDim: 48 });
  tidy(() => {
    const { u, v, text } = batch(small, 2);
    const out = model.forwardTrain(u, v, text, 0.99);
    const losses = detailClipLoss(out, { u, v }, ibot, 0, { patchSize: 8 });
    assert(Number.isFinite(losses.loss.item()), "loss with mask ratio 0 is not finite");
    model.eval();
    const image = noGrad(() => model.encodeImage(u));
    assertEquals(image.shape, [2, 16]);
    const emaText = noGrad(() => model.encodeText(text, { ema: true }));
    assertEquals(emaText.shape, [2, 16]);
  });
  ibot.dispose();
  model.dispose();
});
