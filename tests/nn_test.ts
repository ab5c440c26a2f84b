// nn_test.ts: the layers of src/nn against PyTorch 1.13 (python3-torch): seeded construction against torch's own
// default init, forwards (and a few gradients) against torch.nn / timm 0.5.4 / OpenAI CLIP reference code fed the
// same weights and inputs, the module mechanics (names, ModuleList, train/eval, freeze), and native handle leaks.
import {
  Attention,
  Block,
  Conv2d,
  Embedding,
  LayerNorm,
  Linear,
  Mlp,
  type Module,
  ModuleList,
  MultiheadAttention,
  ResidualAttentionBlock,
  WeightNormLinear,
} from "../src/nn/mod.ts";
import { causalMask } from "../src/models/text.ts";
import { liveTensors, manualSeed, Tensor, tidy } from "../src/torch/mod.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";
import { assertAllClose, leakFreeTest, perturb, prefixedState, torchReference } from "./torch_reference.ts";

/** Disposes every module's parameters when fn ends (parameters live outside scopes). */
function withModules<T>(modules: Module[], fn: () => T): T {
  try {
    return fn();
  } finally {
    for (const m of modules) m.dispose();
  }
}

function stateOf(entries: [string, Module][]): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [prefix, module] of entries) for (const [k, v] of module.stateDict(prefix)) out.set(k, v);
  return out;
}

// ---- construction ------------------------------------------------------------------------------------------------

leakFreeTest("seeded construction equals PyTorch's default init (Linear, Conv2d, Embedding, MHA, LayerNorm)", () => {
  manualSeed(1234);
  const modules: [string, Module][] = [
    ["a", new Linear(5, 7)],
    ["b", new Linear(6, 3, { bias: false })],
    ["c", new Conv2d(3, 8, 4, 4)],
    ["d", new Embedding(10, 6)],
    ["e", new MultiheadAttention(16, 4)],
    ["f", new LayerNorm(5)],
  ];
  withModules(modules.map(([, m]) => m), () => {
    const ours = stateOf(modules);
    const ref = torchReference(
      `
torch.manual_seed(1234)
mods = [("a", nn.Linear(5, 7)), ("b", nn.Linear(6, 3, bias=False)), ("c", nn.Conv2d(3, 8, 4, stride=4)),
        ("d", nn.Embedding(10, 6)), ("e", nn.MultiheadAttention(16, 4)), ("f", nn.LayerNorm(5))]
for name, m in mods:
    for k, v in m.state_dict(prefix=name + ".").items():
        OUT[k] = v
`,
      {},
    );
    assertEquals([...ours.keys()], [...ref.keys()], "state-dict keys in PyTorch's order");
    for (const [key, value] of ours) assertAllClose(key, value, ref.get(key)!, { atol: 1e-7 });
    // The bias switch removes the member and its key.
    assertEquals((modules[1][1] as Linear).bias, null);
  });
}, { needsTorch: true });

// ---- forwards ----------------------------------------------------------------------------------------------------

leakFreeTest("Linear, Conv2d, LayerNorm (eps and fp32-cast variants), Embedding and Mlp match torch", () => {
  manualSeed(1);
  const linear = new Linear(16, 24);
  const conv = new Conv2d(3, 16, 4, 4);
  const ln = new LayerNorm(16, { eps: 1e-6 });
  const lnCast = new LayerNorm(16, { castToFloat32: true });
  const embedding = new Embedding(50, 16);
  const mlp = new Mlp(16, 64);
  const quick = new Mlp(16, 64, { activation: "quick_gelu", names: ["c_fc", "c_proj"] });
  withModules([linear, conv, ln, lnCast, embedding, mlp, quick], () => {
    // LayerNorms with non-trivial affine parameters, so weight and bias are exercised.
    perturb(ln.weight, 0.5, 1.5);
    perturb(ln.bias, -0.5, 0.5);
    perturb(lnCast.weight, 0.5, 1.5);
    perturb(lnCast.bias, -0.5, 0.5);
    const x = Tensor.randn([2, 5, 16]).mul(3).add(1); // x: (B, N, D)
    const image = Tensor.randn([2, 3, 8, 12]); // image: (B, 3, H, W)
    const wide = Tensor.randn([2, 5, 16], { dtype: "float64" }); // the cast variant must hand back float64
    const ids = Tensor.fromArray([0, 49, 3, 7, 7, 12], [2, 3], { dtype: "int64" });
    const inputs = new Map<string, Tensor>([
      ["x", x],
      ["image", image],
      ["wide", wide],
      ["ids", ids],
      ...prefixedState("linear.", linear.stateDict()),
      ...prefixedState("conv.", conv.stateDict()),
      ...prefixedState("ln.", ln.stateDict()),
      ...prefixedState("lncast.", lnCast.stateDict()),
      ...prefixedState("emb.", embedding.stateDict()),
      ...prefixedState("mlp.", mlp.stateDict()),
      ...prefixedState("quick.", quick.stateDict()),
    ]);
    const ref = torchReference(
      `
x, image, wide, ids = IN["x"], IN["image"], IN["wide"], IN["ids"]
OUT["linear"] = load_strict(nn.Linear(16, 24), "linear.")(x)
OUT["conv"] = load_strict(nn.Conv2d(3, 16, 4, stride=4), "conv.")(image)
OUT["ln"] = load_strict(nn.LayerNorm(16, eps=1e-6), "ln.")(x)
OUT["lncast"] = load_strict(LayerNorm(16), "lncast.")(wide)
OUT["emb"] = load_strict(nn.Embedding(50, 16), "emb.")(ids)
OUT["mlp"] = load_strict(Mlp(16, 64), "mlp.")(x)
quick = load_strict(nn.Sequential(OrderedDict([("c_fc", nn.Linear(16, 64)), ("gelu", QuickGELU()),
                                               ("c_proj", nn.Linear(64, 16))])), "quick.")
OUT["quick"] = quick(x)
`,
      inputs,
    );
    assertAllClose("Linear", linear.forward(x), ref.get("linear")!);
    assertAllClose("Conv2d", conv.forward(image), ref.get("conv")!);
    assertAllClose("LayerNorm eps 1e-6", ln.forward(x), ref.get("ln")!);
    const castOut = lnCast.forward(wide);
    assertEquals(castOut.dtype, "float64", "the fp32-casting LayerNorm returns the input dtype");
    assertAllClose("LayerNorm fp32 cast", castOut, ref.get("lncast")!);
    assertAllClose("Embedding", embedding.forward(ids), ref.get("emb")!, { atol: 0 });
    assertAllClose("Mlp gelu", mlp.forward(x), ref.get("mlp")!);
    assertAllClose("Mlp quick_gelu", quick.forward(x), ref.get("quick")!);
  });
}, { needsTorch: true });

leakFreeTest("Attention matches timm; forwardWithClsAttention gives the same output and the CLS softmax rows", () => {
  manualSeed(2);
  const attn = new Attention(32, 4);
  withModules([attn], () => {
    perturb(attn.qkv.bias!, -0.5, 0.5); // non-zero biases so the [q | k | v] split of the bias is checked too
    const x = Tensor.randn([3, 9, 32]); // x: (B, N, D)
    const ref = torchReference(
      `
out, attn = load_strict(Attention(32, 4), "attn.")(IN["x"])
OUT["out"], OUT["cls"], OUT["rowsum"] = out, attn[:, :, 0, :], attn.sum(-1)
`,
      new Map([["x", x], ...prefixedState("attn.", attn.stateDict())]),
    );
    const plain = attn.forward(x);
    const { out, clsAttention } = attn.forwardWithClsAttention(x);
    assertAllClose("Attention.forward", plain, ref.get("out")!);
    assertAllClose("forwardWithClsAttention out = forward", out, plain, { atol: 1e-6 });
    assertAllClose("clsAttention (B, H, N) = softmax row 0", clsAttention, ref.get("cls")!, { atol: 1e-6 });
    assertAllClose("clsAttention rows sum to 1", clsAttention.sum(-1), Tensor.ones([3, 4]), { atol: 1e-6 });
  });
}, { needsTorch: true });

leakFreeTest("Block matches timm's Block (forward, CLS attention and gradients)", () => {
  manualSeed(3);
  const block = new Block(32, 4);
  withModules([block], () => {
    // Non-trivial LayerNorm affines and biases: LN weights near 1, everything 1-d within ±0.3.
    for (const [, p] of block.namedParameters()) if (p.ndim === 1) perturb(p, -0.3, 0.3, p.numel === 32 ? 1 : 0);
    const x = Tensor.randn([2, 11, 32]).requiresGrad_(); // x: (B, N, D)
    const gy = Tensor.randn([2, 11, 32]);
    const ref = torchReference(
      `
block = load_strict(Block(32, 4), "block.")
x = IN["x"].clone().requires_grad_()
with torch.enable_grad():
    y, attn = block(x)
    (y * IN["gy"]).sum().backward()
OUT["y"], OUT["cls"], OUT["dx"] = y, attn[:, :, 0, :], x.grad
OUT["dqkv"], OUT["dfc1"], OUT["dnorm1"] = block.attn.qkv.weight.grad, block.mlp.fc1.weight.grad, block.norm1.weight.grad
`,
      new Map([["x", x], ["gy", gy], ...prefixedState("block.", block.stateDict())]),
    );
    const { out, clsAttention } = block.forwardWithClsAttention(x);
    assertAllClose("Block.forward", block.forward(x), ref.get("y")!);
    assertAllClose("Block.forwardWithClsAttention out", out, ref.get("y")!);
    assertAllClose("Block clsAttention", clsAttention, ref.get("cls")!, { atol: 1e-6 });
    out.mul(gy).sum().backward();
    assertAllClose("d/dx", x.grad!, ref.get("dx")!, { atol: 2e-5 });
    assertAllClose("d/d qkv.weight", block.attn.qkv.weight.grad!, ref.get("dqkv")!, { atol: 2e-5 });
    assertAllClose("d/d fc1.weight", block.mlp.fc1.weight.grad!, ref.get("dfc1")!, { atol: 2e-5 });
    assertAllClose("d/d norm1.weight", block.norm1.weight.grad!, ref.get("dnorm1")!, { atol: 2e-5 });
  });
}, { needsTorch: true });

leakFreeTest("MultiheadAttention (batch-first) equals torch.nn.MultiheadAttention (sequence-first)", () => {
  manualSeed(4);
  const mha = new MultiheadAttention(32, 4);
  withModules([mha], () => {
    perturb(mha.in_proj_bias, -0.5, 0.5);
    perturb(mha.out_proj.bias!, -0.5, 0.5);
    const x = Tensor.randn([3, 10, 32]); // x: (B, L, D)
    const mask = causalMask(10);
    const ref = torchReference(
      `
mha = load_strict(nn.MultiheadAttention(32, 4), "mha.")
x = IN["x"].permute(1, 0, 2)
OUT["masked"] = mha(x, x, x, need_weights=False, attn_mask=IN["mask"])[0].permute(1, 0, 2)
OUT["open"] = mha(x, x, x, need_weights=False)[0].permute(1, 0, 2)
OUT["mask"] = build_attention_mask(10)
`,
      new Map([["x", x], ["mask", mask], ...prefixedState("mha.", mha.stateDict())]),
    );
    assertAllClose("causalMask = CLIP's build_attention_mask", mask, ref.get("mask")!, { atol: 0 });
    assertAllClose("MHA with the causal mask", mha.forward(x, mask), ref.get("masked")!);
    assertAllClose("MHA without a mask", mha.forward(x, null), ref.get("open")!);
    // Causality: changing the last token must not move any earlier output.
    const changed = x.clone();
    changed.narrow(1, 9, 1).fill_(5);
    const before = mha.forward(x, mask).narrow(1, 0, 9);
    assertAllClose("causal outputs ignore later tokens", mha.forward(changed, mask).narrow(1, 0, 9), before, {
      atol: 0,
    });
  });
}, { needsTorch: true });

leakFreeTest("ResidualAttentionBlock equals OpenAI CLIP's block (keys load strictly)", () => {
  manualSeed(5);
  const block = new ResidualAttentionBlock(32, 4);
  withModules([block], () => {
    // Non-trivial LayerNorm affines and biases: LN weights near 1, everything 1-d within ±0.3.
    for (const [, p] of block.namedParameters()) if (p.ndim === 1) perturb(p, -0.3, 0.3, p.numel === 32 ? 1 : 0);
    assertEquals([...block.stateDict().keys()], [
      "attn.in_proj_weight",
      "attn.in_proj_bias",
      "attn.out_proj.weight",
      "attn.out_proj.bias",
      "ln_1.weight",
      "ln_1.bias",
      "mlp.c_fc.weight",
      "mlp.c_fc.bias",
      "mlp.c_proj.weight",
      "mlp.c_proj.bias",
      "ln_2.weight",
      "ln_2.bias",
    ]);
    const x = Tensor.randn([2, 8, 32]); // x: (B, L, D)
    const mask = causalMask(8);
    const ref = torchReference(
      `
block = load_strict(ResidualAttentionBlock(32, 4, build_attention_mask(8)), "block.")
OUT["y"] = block(IN["x"].permute(1, 0, 2)).permute(1, 0, 2)
`,
      new Map([["x", x], ...prefixedState("block.", block.stateDict())]),
    );
    assertAllClose("ResidualAttentionBlock", block.forward(x, mask), ref.get("y")!);
  });
}, { needsTorch: true });

leakFreeTest("WeightNormLinear equals nn.utils.weight_norm(Linear) in value and gradient; g is frozen", () => {
  manualSeed(6);
  const layer = new WeightNormLinear(16, 40);
  withModules([layer], () => {
    assertEquals(layer.weight_g.shape, [40, 1]);
    assert(!layer.weight_g.requiresGrad && layer.weight_v.requiresGrad, "g frozen, v trainable");
    perturb(layer.weight_g, 0.5, 2); // a g other than 1 checks the g * v / ||v|| composition
    const x = Tensor.randn([3, 5, 16]);
    const gy = Tensor.randn([3, 5, 40]);
    const ref = torchReference(
      `
lin = nn.utils.weight_norm(nn.Linear(16, 40, bias=False))
lin.weight_g.requires_grad = False
load_strict(lin, "wn.")
with torch.enable_grad():
    y = lin(IN["x"])
    (y * IN["gy"]).sum().backward()
OUT["y"], OUT["dv"], OUT["w"] = y, lin.weight_v.grad, lin.weight
`,
      new Map([["x", x], ["gy", gy], ...prefixedState("wn.", layer.stateDict())]),
    );
    assertAllClose("weight = g v / ||v||", layer.weight(), ref.get("w")!, { atol: 1e-6 });
    const y = layer.forward(x);
    assertAllClose("forward", y, ref.get("y")!);
    y.mul(gy).sum().backward();
    assertAllClose("d/d weight_v", layer.weight_v.grad!, ref.get("dv")!, { atol: 1e-5 });
    assertEquals(layer.weight_g.grad, null, "the frozen g gets no gradient");
  });
}, { needsTorch: true });

// ---- module mechanics ----------------------------------------------------------------------------------------------

leakFreeTest("ModuleList names children 0..n-1, indexes, iterates and rejects out-of-range indices", () => {
  const items = [new Linear(2, 3), new Linear(3, 4), new Linear(4, 5)];
  const list = new ModuleList(items);
  withModules([list], () => {
    assertEquals(list.length, 3);
    assert(list.at(0) === items[0] && list.at(2) === items[2] && list.at(-1) === items[2], "at(i)");
    assertEquals([...list].map((l) => l.outFeatures), [3, 4, 5], "iteration order");
    assertEquals([...list.stateDict().keys()], ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]);
    assertThrows(() => list.at(3), RangeError, ["index 3", "length 3"]);
  });
});

leakFreeTest("Mlp names pick the state-dict keys; train/eval and freeze reach every descendant", () => {
  const timm = new Mlp(8, 16);
  const clip = new Mlp(8, 16, { activation: "quick_gelu", names: ["c_fc", "c_proj"] });
  const block = new Block(8, 2);
  withModules([timm, clip, block], () => {
    assertEquals([...timm.stateDict().keys()], ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    assertEquals([...clip.stateDict().keys()], ["c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"]);
    assert(block.training && block.attn.qkv.training, "modules start in training mode");
    block.eval();
    assert(!block.training && !block.attn.qkv.training && !block.mlp.fc2.training, "eval() reaches the leaves");
    block.train();
    assert(block.mlp.fc2.training, "train() reaches the leaves");
    assertEquals(block.numParameters({ trainableOnly: true }), block.numParameters());
    block.freeze();
    assertEquals(block.numParameters({ trainableOnly: true }), 0);
    assert(!block.norm2.bias.requiresGrad, "freeze() reaches every parameter");
  });
});

Deno.test("a block forward leaves no native handles behind (outside the returned tensor)", () => {
  manualSeed(7);
  const block = new Block(16, 2);
  const text = new ResidualAttentionBlock(16, 2);
  try {
    const x = Tensor.randn([2, 5, 16]);
    const mask = causalMask(5);
    const baseline = liveTensors();
    tidy(() => {
      block.forward(x);
      block.forwardWithClsAttention(x);
      text.forward(x, mask);
    });
    assertEquals(liveTensors(), baseline, "handles after a tidy forward");
    const kept = block.forward(x); // outside a scope, only the result survives a forward
    assertEquals(liveTensors(), baseline + 1, "handles after an unscoped forward");
    kept.dispose();
    x.dispose();
    mask.dispose();
  } finally {
    block.dispose();
    text.dispose();
  }
});
