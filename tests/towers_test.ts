// towers_test.ts: the vision, text and iBOT-head towers. Parameter counts against docs/model.md#parameter-counts;
// state-dict keys and shapes against the official golden weights; seeded construction against Python mirrors of the
// official constructors (timm 0.5.4 init order, CLIP's initialize_parameters, iBOT's head); init statistics; forwards
// against PyTorch reference code fed the same weights; and the official DetailCLIP outputs in
// tests/fixtures/golden/tiny (teacher CLS attention, teacher iBOT logits, student image embedding on the kept tokens,
// text embedding).
import { IBOTHead } from "../src/models/heads.ts";
import { causalMask, encodeText, initTextTransformer, type TextParts, TextTransformer } from "../src/models/text.ts";
import { MaskVisionTransformer } from "../src/models/vit.ts";
import { Embedding, LayerNorm, type Module } from "../src/nn/mod.ts";
import { cat, liveTensors, manualSeed, noGrad, SafeTensorsFile, Tensor, tidy } from "../src/torch/mod.ts";
import { assert, assertClose, assertEquals, GOLDEN_DIR } from "./helpers.ts";
import { assertAllClose, leakFreeTest, perturb, prefixedState, torchReference } from "./torch_reference.ts";

const GOLDEN = GOLDEN_DIR;

function withModules<R>(modules: Module[], fn: () => R): R {
  try {
    return fn();
  } finally {
    for (const m of modules) m.dispose();
  }
}

/** mean and (population) std of a tensor's elements. */
function stats(t: Tensor): { mean: number; std: number; maxAbs: number } {
  return tidy(() => {
    const x = t.detach().to({ dtype: "float64" });
    return { mean: x.mean().item(), std: x.std(undefined, { correction: 0 }).item(), maxAbs: x.abs().amax().item() };
  });
}

/** std within relTol of the expected value, and mean within 5 standard errors of 0. */
function assertStd(name: string, t: Tensor, expected: number, relTol: number): void {
  const s = stats(t);
  assertClose(s.std, expected, { rtol: relTol, atol: 0, message: `${name} std` });
  assertClose(s.mean, 0, { atol: 5 * expected / Math.sqrt(t.numel), rtol: 0, message: `${name} mean` });
}

function assertConstant(name: string, t: Tensor, value: number): void {
  const { min, max } = tidy(() => ({ min: t.detach().amin().item(), max: t.detach().amax().item() }));
  assert(min === value && max === value, `${name}: expected every element ${value}, got range [${min}, ${max}]`);
}

/** Non-trivial 1-d parameters: LayerNorm weights in [0.8, 1.2], every bias within ±0.2. Zero biases and unit
 * LayerNorms would hide a missing bias or affine term from a parity test. */
function perturbVectors(module: Module): void {
  const layerNormWeights = new Set<Tensor>();
  for (const [, m] of module.namedModules()) if (m instanceof LayerNorm) layerNormWeights.add(m.weight);
  for (const [, p] of module.namedParameters()) {
    if (p.ndim === 1) perturb(p, -0.2, 0.2, layerNormWeights.has(p) ? 1 : 0);
  }
}

// ---- parameter counts and init statistics at full size (docs/model.md) ----------------------------------

leakFreeTest("ViT-B/16: 85,798,656 parameters, 85,208,064 trainable; timm init statistics; frozen random conv", () => {
  manualSeed(20);
  const vit = new MaskVisionTransformer({ imageSize: 224, patchSize: 16, width: 768, depth: 12, heads: 12 });
  withModules([vit], () => {
    assertEquals(vit.numParameters(), 85_798_656, "total");
    assertEquals(vit.numParameters({ trainableOnly: true }), 85_208_064, "trainable");
    assertEquals([vit.gridSize, vit.numPatches], [14, 196]);
    assertEquals([...vit.stateDict().keys()].slice(0, 5), [
      "cls_token",
      "pos_embed",
      "patch_embed.proj.weight",
      "patch_embed.proj.bias",
      "blocks.0.norm1.weight",
    ], "timm's state-dict order");
    // trunc_normal(.02) truncated at ±2 absolute is a plain N(0, .02) in practice.
    assertStd("pos_embed", vit.pos_embed, 0.02, 0.01);
    assertStd("cls_token", vit.cls_token, 0.02, 0.15);
    for (const [i, block] of [...vit.blocks].entries()) {
      const linears = { qkv: block.attn.qkv, proj: block.attn.proj, fc1: block.mlp.fc1, fc2: block.mlp.fc2 };
      for (const [name, linear] of Object.entries(linears)) {
        assertStd(`blocks.${i}.${name}.weight`, linear.weight, 0.02, 0.02);
        assertConstant(`blocks.${i}.${name}.bias`, linear.bias!, 0);
      }
      assertConstant(`blocks.${i}.norm1.weight`, block.norm1.weight, 1);
      assertConstant(`blocks.${i}.norm2.bias`, block.norm2.bias, 0);
    }
    assertConstant("norm.weight", vit.norm.weight, 1);
    // PyTorch's default Conv2d init: U(±1/sqrt(3*16*16)), frozen.
    const conv = vit.patch_embed.proj;
    const bound = 1 / Math.sqrt(768);
    assert(!conv.weight.requiresGrad && !conv.bias!.requiresGrad, "patch conv frozen");
    const w = stats(conv.weight), b = stats(conv.bias!);
    assert(
      w.maxAbs <= bound && b.maxAbs <= bound && b.maxAbs > 0,
      `conv within U(±${bound}): ${w.maxAbs}, ${b.maxAbs}`,
    );
    assertClose(w.std, bound / Math.sqrt(3), { rtol: 0.01, atol: 0, message: "conv weight std" });
  });
});

leakFreeTest("text transformer 12 x 512: 37,828,608 parameters; CLIP init statistics", () => {
  manualSeed(21);
  const text = new TextTransformer({ width: 512, layers: 12, heads: 8 });
  withModules([text], () => {
    initTextTransformer(text, 512, 12);
    assertEquals(text.numParameters(), 37_828_608, "total");
    assertEquals(text.numParameters({ trainableOnly: true }), 37_828_608, "trainable");
    const projStd = 512 ** -0.5 * 24 ** -0.5; // 0.009021
    for (const [i, block] of [...text.resblocks].entries()) {
      assertStd(`${i}.in_proj_weight`, block.attn.in_proj_weight, 512 ** -0.5, 0.01);
      assertStd(`${i}.out_proj.weight`, block.attn.out_proj.weight, projStd, 0.01);
      assertStd(`${i}.c_fc.weight`, block.mlp.fc1.weight, 1024 ** -0.5, 0.01);
      assertStd(`${i}.c_proj.weight`, block.mlp.fc2.weight, projStd, 0.01);
      assertConstant(`${i}.in_proj_bias`, block.attn.in_proj_bias, 0);
      assertConstant(`${i}.out_proj.bias`, block.attn.out_proj.bias!, 0);
      // c_fc / c_proj biases keep PyTorch's default U(±1/sqrt(fan_in)).
      const fc = stats(block.mlp.fc1.bias!), proj = stats(block.mlp.fc2.bias!);
      assert(fc.maxAbs <= 512 ** -0.5 && fc.maxAbs > 0.5 * 512 ** -0.5, `${i}.c_fc.bias range ${fc.maxAbs}`);
      assert(proj.maxAbs <= 2048 ** -0.5 && proj.maxAbs > 0.5 * 2048 ** -0.5, `${i}.c_proj.bias range ${proj.maxAbs}`);
      assertConstant(`${i}.ln_1.weight`, block.ln_1.weight, 1);
    }
  });
});

leakFreeTest("iBOT head 768 -> 8192: 8,401,152 parameters, 8,392,960 trainable; shared frozen-g last layer", () => {
  manualSeed(22);
  const head = new IBOTHead({ inDim: 768, outDim: 8192 });
  withModules([head], () => {
    assertEquals(head.numParameters(), 8_401_152, "total");
    assertEquals(head.numParameters({ trainableOnly: true }), 8_392_960, "trainable");
    for (const [i, linear] of head.mlp.layers.entries()) {
      assertStd(`mlp.${2 * i}.weight`, linear.weight, 0.02, 0.02);
      assertConstant(`mlp.${2 * i}.bias`, linear.bias!, 0);
    }
    assertConstant("weight_g", head.last_layer.weight_g, 1);
    assert(!head.last_layer.weight_g.requiresGrad, "weight_g frozen");
    const v = stats(head.last_layer.weight_v);
    assert(v.maxAbs <= 1 / 16, `weight_v within U(±1/16): ${v.maxAbs}`);
    assertClose(v.std, 1 / 16 / Math.sqrt(3), { rtol: 0.01, atol: 0, message: "weight_v std" });
    const state = head.stateDict();
    assert(head.last_layer2 === head.last_layer, "last_layer2 is last_layer");
    assert(state.get("last_layer2.weight_v") === state.get("last_layer.weight_v"), "shared tensors in the state dict");
    assertEquals([...state.keys()].slice(-4), [
      "last_layer.weight_g",
      "last_layer.weight_v",
      "last_layer2.weight_g",
      "last_layer2.weight_v",
    ]);
  });
});

// ---- the official key set ------------------------------------------------------------------------------------------

function tinyTowers(): { visual: MaskVisionTransformer; transformer: TextTransformer; head: IBOTHead } {
  return {
    visual: new MaskVisionTransformer({ imageSize: 224, patchSize: 16, width: 64, depth: 2, heads: 4 }),
    transformer: new TextTransformer({ width: 64, layers: 2, heads: 4 }),
    head: new IBOTHead({ inDim: 64, outDim: 256, hiddenDim: 128, bottleneckDim: 64 }),
  };
}

leakFreeTest("tiny towers' state-dict keys and shapes equal the official golden weights exactly", () => {
  const { visual, transformer, head } = tinyTowers();
  withModules([visual, transformer, head], () => {
    using file = SafeTensorsFile.open(`${GOLDEN}/weights.safetensors`);
    for (
      const [prefix, module] of [["visual.", visual], ["transformer.", transformer], ["ibot_head.", head]] as const
    ) {
      const ours = new Map([...module.stateDict(prefix.slice(0, -1))].map(([k, t]) => [k, t.shape]));
      const golden = new Map(file.names().filter((k) => k.startsWith(prefix)).map((k) => [k, file.info(k).shape]));
      assertEquals([...ours.keys()].sort(), [...golden.keys()].sort(), `${prefix} key set`);
      for (const [key, shape] of ours) assertEquals(shape, golden.get(key), `${key} shape`);
    }
  });
});

// ---- seeded construction against the official constructors --------------------------------------------------------

leakFreeTest("seeded construction draws the generator as timm / CLIP / iBOT do (identical weights)", () => {
  manualSeed(99);
  const visual = new MaskVisionTransformer({ imageSize: 32, patchSize: 8, width: 32, depth: 2, heads: 4 });
  manualSeed(100);
  const transformer = new TextTransformer({ width: 32, layers: 2, heads: 4 });
  initTextTransformer(transformer, 32, 2);
  manualSeed(101);
  const head = new IBOTHead({ inDim: 32, outDim: 64, hiddenDim: 48, bottleneckDim: 16 });
  withModules([visual, transformer, head], () => {
    const ref = torchReference(
      `
torch.manual_seed(99)
for k, v in VisionTransformer(32, 8, 32, 2, 4).state_dict(prefix="visual.").items():
    OUT[k] = v
torch.manual_seed(100)
t = Transformer(32, 2, 4)
init_text_blocks(t)
for k, v in t.state_dict(prefix="transformer.").items():
    OUT[k] = v
torch.manual_seed(101)
for k, v in IBOTHead(32, 64, 48, 16).state_dict(prefix="ibot_head.").items():
    OUT[k] = v
`,
      {},
    );
    const ours = new Map([
      ...visual.stateDict("visual"),
      ...transformer.stateDict("transformer"),
      ...head.stateDict("ibot_head"),
    ]);
    assertEquals([...ours.keys()], [...ref.keys()], "state-dict keys in the official order");
    for (const [key, value] of ours) assertAllClose(key, value, ref.get(key)!, { atol: 1e-7 });
    assert(!visual.patch_embed.proj.weight.requiresGrad, "patch conv frozen");
  });
}, { needsTorch: true });

// ---- forwards against PyTorch reference code ------------------------------------------------------------------------

leakFreeTest("ViT forwardFeatures matches timm + A-CLIP: all tokens, kept tokens, mean CLS attention", () => {
  manualSeed(11);
  const vit = new MaskVisionTransformer({ imageSize: 32, patchSize: 8, width: 32, depth: 3, heads: 4 });
  withModules([vit], () => {
    perturbVectors(vit);
    const x = Tensor.randn([3, 3, 32, 32]); // x: (B, 3, H, W), 16 patches
    // Different kept sets per image, each in raster order, K = 9 of 16.
    const keep = Tensor.rand([3, 16]).argsort(1).narrow(1, 0, 9).sort(1).values; // keep: (B, K)
    const ref = torchReference(
      `
vit = load_strict(VisionTransformer(32, 8, 32, 3, 4), "vit.")
OUT["tokens"], OUT["attn"] = vit.forward_features(IN["x"])
OUT["kept_tokens"], OUT["kept_attn"] = vit.forward_features(IN["x"], IN["keep"])
`,
      new Map([["x", x], ["keep", keep], ...prefixedState("vit.", vit.stateDict())]),
    );
    const plain = vit.forwardFeatures(x);
    assertEquals(plain.clsAttention, null, "no attention unless asked");
    assertAllClose("tokens (B, 17, D)", plain.tokens, ref.get("tokens")!);
    const full = vit.forwardFeatures(x, { collectClsAttention: true });
    assertAllClose("tokens with attention collection", full.tokens, plain.tokens, { atol: 1e-6 });
    assertAllClose("clsAttention (B, 16)", full.clsAttention!, ref.get("attn")!, { atol: 1e-6 });
    const kept = vit.forwardFeatures(x, { keep, collectClsAttention: true });
    assertAllClose("kept tokens (B, 10, D)", kept.tokens, ref.get("kept_tokens")!);
    assertAllClose("clsAttention over kept tokens (B, 9)", kept.clsAttention!, ref.get("kept_attn")!, { atol: 1e-6 });
    assert(!full.clsAttention!.requiresGrad, "the CLS attention is detached");
  });
}, { needsTorch: true });

function textParts(width: number, context: number, vocab: number, embed: number, layers: number, heads: number) {
  const tokenEmbedding = new Embedding(vocab, width);
  const lnFinal = new LayerNorm(width, { castToFloat32: true });
  const transformer = new TextTransformer({ width, layers, heads });
  const positionalEmbedding = Tensor.randn([context, width]).mul(0.1).keep();
  const projection = Tensor.randn([width, embed]).mul(width ** -0.5).keep();
  const mask = causalMask(context).keep();
  const parts: TextParts = { tokenEmbedding, positionalEmbedding, transformer, lnFinal, projection, mask };
  const dispose = (): void => {
    for (const m of [tokenEmbedding, lnFinal, transformer]) m.dispose();
    for (const t of [positionalEmbedding, projection, mask]) t.dispose();
  };
  return { parts, dispose };
}

leakFreeTest("encodeText matches CLIP's encode_text (full context and a shorter sequence)", () => {
  manualSeed(12);
  const { parts, dispose } = textParts(32, 12, 64, 24, 2, 4);
  try {
    initTextTransformer(parts.transformer, 32, 2);
    perturbVectors(parts.transformer);
    perturbVectors(parts.lnFinal);
    // EOT (63, the largest id) at different positions; padding 0 after it.
    const rows = [[5, 9, 63], [7, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 63], [63]];
    const ids = rows.flatMap((r) => [...r, ...Array(12 - r.length).fill(0)]);
    const tokens = Tensor.fromArray(ids, [3, 12], { dtype: "int64" });
    // L = 3 < context: pools at argmax of the first 3 ids, whether or not the EOT is among them.
    const short = tokens.narrow(1, 0, 3).contiguous(); // short: (B, 3)
    const ref = torchReference(
      `
def run(tokens):
    L = tokens.shape[1]
    t = load_strict(Transformer(32, 2, 4, build_attention_mask(L)), "transformer.")
    emb = load_strict(nn.Embedding(64, 32), "emb.")
    ln = load_strict(LayerNorm(32), "ln.")
    return encode_text(tokens, emb, IN["pos"][:L], t, ln, IN["proj"])
OUT["full"], OUT["short"] = run(IN["tokens"]), run(IN["short"])
`,
      new Map([
        ["tokens", tokens],
        ["short", short],
        ["pos", parts.positionalEmbedding],
        ["proj", parts.projection],
        ...prefixedState("transformer.", parts.transformer.stateDict()),
        ...prefixedState("emb.", parts.tokenEmbedding.stateDict()),
        ...prefixedState("ln.", parts.lnFinal.stateDict()),
      ]),
    );
    assertAllClose("encodeText (B, E)", encodeText(parts, tokens), ref.get("full")!);
    assertAllClose("encodeText, L < context", encodeText(parts, short), ref.get("short")!);
  } finally {
    dispose();
  }
}, { needsTorch: true });

leakFreeTest("IBOTHead matches iBOT's head (token-wise on (B, N, D) and on (B, D))", () => {
  manualSeed(13);
  const head = new IBOTHead({ inDim: 32, outDim: 64, hiddenDim: 48, bottleneckDim: 16 });
  withModules([head], () => {
    perturbVectors(head);
    const x = Tensor.randn([2, 5, 32]); // x: (B, N, D)
    const ref = torchReference(
      `
head = load_strict(IBOTHead(32, 64, 48, 16), "head.")
OUT["tokens"], OUT["rows"] = head(IN["x"]), head(IN["x"][:, 0])
`,
      new Map([["x", x], ...prefixedState("head.", head.stateDict())]),
    );
    assertAllClose("logits (B, N, K)", head.forward(x), ref.get("tokens")!);
    assertAllClose("logits (B, K)", head.forward(x.select(1, 0)), ref.get("rows")!);
  });
}, { needsTorch: true });

// ---- the official DetailCLIP outputs (golden/tiny) -------------------------------------------------------------------

/** The tensors of a golden file under a prefix, prefix stripped. */
function goldenState(file: SafeTensorsFile, prefix: string): Map<string, Tensor> {
  return new Map(file.names().filter((k) => k.startsWith(prefix)).map((k) => [k.slice(prefix.length), file.tensor(k)]));
}

// golden/README.md: forward outputs within 1e-4 relative (of the tensor's largest magnitude) or 1e-5 absolute.
const GOLDEN_TOL = { atol: 1e-5, rtol: 1e-4 };
// The attention values are about 1/196, so an absolute 1e-5 would be loose; hold them to 1e-4 of their own scale.
const ATTENTION_TOL = { atol: 0, rtol: 1e-4 };

leakFreeTest("golden: teacher CLS attention and iBOT logits, student image embedding, text embedding", () => {
  const { visual: teacher, transformer, head } = tinyTowers();
  const student = new MaskVisionTransformer({ imageSize: 224, patchSize: 16, width: 64, depth: 2, heads: 4 });
  const tokenEmbedding = new Embedding(512, 64);
  const lnFinal = new LayerNorm(64, { castToFloat32: true });
  withModules([teacher, transformer, head, student, tokenEmbedding, lnFinal], () => {
    using weights = SafeTensorsFile.open(`${GOLDEN}/weights.safetensors`);
    using outputs = SafeTensorsFile.open(`${GOLDEN}/outputs.safetensors`);
    using inputs = SafeTensorsFile.open(`${GOLDEN}/inputs.safetensors`);
    // The teacher runs after the EMA update, so its weights are the ema_after.* tensors.
    teacher.loadStateDict(goldenState(outputs, "ema_after.visual_ema."));
    head.loadStateDict(goldenState(outputs, "ema_after.ibot_head_e."));
    student.loadStateDict(goldenState(weights, "visual."));
    transformer.loadStateDict(goldenState(weights, "transformer."));
    tokenEmbedding.loadStateDict(goldenState(weights, "token_embedding."));
    lnFinal.loadStateDict(goldenState(weights, "ln_final."));
    const u = inputs.tensor("u"), v = inputs.tensor("v"); // u, v: (B, 3, 224, 224)
    noGrad(() => {
      const views = [["u", u], ["v", v]] as const;
      const teacherTokens: Tensor[] = [];
      for (const [name, view] of views) {
        const { tokens, clsAttention } = teacher.forwardFeatures(view, { collectClsAttention: true });
        const expected = outputs.tensor(`attn_${name}`);
        assertAllClose(`teacher attn_${name} (B, 196)`, clsAttention!, expected, ATTENTION_TOL);
        teacherTokens.push(tokens);
      }
      const logits = head.forward(cat(teacherTokens, 0)); // logits: (2B, 197, K)
      const cls = outputs.tensor("teacher_ibot_cls"), patch = outputs.tensor("teacher_ibot_patch");
      assertAllClose("teacher_ibot_cls (2B, K)", logits.select(1, 0), cls, GOLDEN_TOL);
      assertAllClose("teacher_ibot_patch (2B, 196, K)", logits.slice(1, 1), patch, GOLDEN_TOL);
      // The student sees the kept patches (mask false) of the official mask; its CLS token gives the image embedding.
      const projection = weights.tensor("image_projection"); // (D, E)
      for (const [name, view] of views) {
        const mask = outputs.tensor(`mask_${name}`); // mask: (B, 196), true = removed
        const k = 196 - mask.select(0, 0).long().sum().item();
        const keep = mask.long().argsort(1, { stable: true }).narrow(1, 0, k); // keep: (B, K), raster order
        const { tokens } = student.forwardFeatures(view, { keep });
        assertEquals(tokens.shape, [4, 1 + k, 64]);
        const expected = outputs.tensor(`img_embed_${name}`);
        assertAllClose(`img_embed_${name}`, tokens.select(1, 0).matmul(projection), expected, GOLDEN_TOL);
      }
      const parts: TextParts = {
        tokenEmbedding,
        positionalEmbedding: weights.tensor("positional_embedding"),
        transformer,
        lnFinal,
        projection: weights.tensor("text_projection"),
        mask: causalMask(16),
      };
      const expected = outputs.tensor("text_embed");
      assertAllClose("text_embed (B, E)", encodeText(parts, inputs.tensor("text")), expected, GOLDEN_TOL);
    });
  });
});

// ---- mode switches and handle lifetimes ----------------------------------------------------------------------------

leakFreeTest("towers: eval/train and freeze reach every block; a collecting forward leaks no handles", () => {
  manualSeed(14);
  const vit = new MaskVisionTransformer({ imageSize: 32, patchSize: 8, width: 32, depth: 2, heads: 4 });
  const head = new IBOTHead({ inDim: 32, outDim: 64, hiddenDim: 48, bottleneckDim: 16 });
  withModules([vit, head], () => {
    vit.eval();
    assert(!vit.training && !vit.blocks.at(1).attn.proj.training && !vit.patch_embed.proj.training, "eval()");
    vit.train();
    assert(vit.blocks.at(-1).mlp.fc2.training, "train()");
    head.freeze();
    assertEquals(head.numParameters({ trainableOnly: true }), 0, "frozen head");
    const x = Tensor.randn([2, 3, 32, 32]);
    const keep = Tensor.fromArray([0, 3, 5, 15, 1, 2, 8, 9], [2, 4], { dtype: "int64" });
    const baseline = liveTensors();
    tidy(() => {
      const { tokens } = vit.forwardFeatures(x, { keep, collectClsAttention: true });
      const loss = head.forward(tokens).sum().add(tokens.sum());
      loss.backward();
    });
    assertEquals(liveTensors(), baseline, "live handles after a scoped forward and backward");
    assert(vit.blocks.at(0).attn.qkv.weight.grad !== null, "gradients reached the student");
    assertEquals(vit.patch_embed.proj.weight.grad, null, "the frozen conv gets no gradient");
  });
});
