// torch_reference.ts: runs reference math in Python/PyTorch (Debian's python3-torch) on tensors handed over as a
// safetensors file, and reads its outputs back, so the layer and tower tests compare against someone else's
// implementation. The Python side needs only torch (no safetensors package): a tiny reader and writer are below,
// together with reference modules written as the official code writes them (timm 0.5.4 ViT, OpenAI CLIP text
// blocks, iBOT's head).
import { liveTensors, loadSafeTensors, noGrad, Tensor, tidy, where, writeSafeTensors } from "../src/torch/mod.ts";
import { assertEquals, AssertionError, missingTool, pythonModulesMissing } from "./helpers.ts";

export const PYTHON = "/usr/bin/python3";

/** null when Python can import torch, else why not. */
export const torchMissing: string | null = pythonModulesMissing(["torch"]);
/** Whether the tests that compare against PyTorch are ignored here (see missingTool: they fail in CI instead). */
export const noTorch: boolean = missingTool("python3 with torch", torchMissing);

const PY_IO = `
import json, struct, sys, math
from collections import OrderedDict
import torch
import torch.nn as nn
import torch.nn.functional as F
torch.set_grad_enabled(False)
DT = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "I64": torch.int64, "I32": torch.int32,
      "U8": torch.uint8, "BOOL": torch.bool}
def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data, out = json.loads(raw[8:8 + n]), bytearray(raw[8 + n:]), {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dtype, (b, end) = DT[e["dtype"]], e["data_offsets"]
        size = torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(data, dtype=dtype, count=(end - b) // size, offset=b) if end > b else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(e["shape"]).clone()
    return out
def save(path, tensors):
    names = {v: k for k, v in DT.items()}
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        blob = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
IN, OUT = load(sys.argv[1]), {}
def prefixed(prefix):
    return {k[len(prefix):]: v for k, v in IN.items() if k.startswith(prefix)}
def load_strict(module, prefix):
    # strict: our state-dict keys and shapes must be exactly the reference module's.
    module.load_state_dict(prefixed(prefix), strict=True)
    return module
`;

/** The reference modules, as the official code writes them. */
export const PY_MODELS = `
# ---- timm 0.5.4 (vision_transformer.py, layers/mlp.py, layers/patch_embed.py) ----
class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x), attn
class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
    def forward(self, x):
        a, attn = self.attn(self.norm1(x))
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, attn
class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)
def _init_vit_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)
class VisionTransformer(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=.02)
        nn.init.trunc_normal_(self.cls_token, std=.02)
        self.apply(_init_vit_weights)
        self.patch_embed.proj.weight.requires_grad = False
        self.patch_embed.proj.bias.requires_grad = False
    def forward_features(self, x, keep=None):
        # A-CLIP/DetailCLIP order: pos_embed on the patches, remove tokens, prepend cls + pos_embed[:, 0], blocks,
        # norm; the teacher's attention is the full per-layer maps, stacked and averaged
        # (docs/model.md#attention-guided-token-removal).
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).repeat(1, 1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        attns = []
        for blk in self.blocks:
            x, a = blk(x)
            attns.append(a)
        attn = torch.stack(attns).mean(0)[:, :, 0, 1:].mean(1)
        return self.norm(x), attn

# ---- OpenAI CLIP (clip/model.py) ----
class LayerNorm(nn.LayerNorm):
    def forward(self, x):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)
class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)
class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask
    def attention(self, x):
        mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]
    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x
class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])
    def forward(self, x):
        return self.resblocks(x)
def build_attention_mask(context_length):
    mask = torch.empty(context_length, context_length)
    mask.fill_(float("-inf"))
    mask.triu_(1)
    return mask
def init_text_blocks(transformer):
    proj_std = (transformer.width ** -0.5) * ((2 * transformer.layers) ** -0.5)
    attn_std = transformer.width ** -0.5
    fc_std = (2 * transformer.width) ** -0.5
    for block in transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
def encode_text(text, token_embedding, positional_embedding, transformer, ln_final, text_projection):
    x = token_embedding(text)
    x = x + positional_embedding
    x = x.permute(1, 0, 2)
    x = transformer(x)
    x = x.permute(1, 0, 2)
    x = ln_final(x)
    return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ text_projection

# ---- iBOT (models/head.py: DINOHead / iBOTHead, shared_head=True, norm None, act gelu) ----
class IBOTHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                  nn.Linear(hidden_dim, bottleneck_dim)]
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False
        self.last_layer2 = self.last_layer
    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
    def forward(self, x):
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        return self.last_layer(x)
`;

/**
 * Runs `script` (Python; sees IN: dict of the inputs, fills OUT: dict of tensors; helpers load_strict/prefixed and
 * the reference modules) and returns OUT as tensors in the current scope.
 */
export function torchReference(
  script: string,
  inputs: Map<string, Tensor> | Record<string, Tensor>,
): Map<string, Tensor> {
  const dir = Deno.makeTempDirSync({ prefix: "torch_reference_" });
  try {
    const inPath = `${dir}/in.safetensors`;
    const outPath = `${dir}/out.safetensors`;
    writeSafeTensors(inPath, inputs);
    const code = `${PY_IO}\n${PY_MODELS}\n${script}\nsave(sys.argv[2], OUT)\n`;
    const out = new Deno.Command(PYTHON, { args: ["-c", code, inPath, outPath], stdout: "piped", stderr: "piped" })
      .outputSync();
    if (!out.success) throw new Error(`the PyTorch reference failed:\n${new TextDecoder().decode(out.stderr)}`);
    return loadSafeTensors(outPath);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Every key of a state dict under a prefix (for handing module weights to Python). */
export function prefixedState(prefix: string, state: Map<string, Tensor>): Map<string, Tensor> {
  return new Map([...state].map(([key, value]) => [`${prefix}${key}`, value]));
}

/** Asserts equal shapes and max |got - expected| <= atol + rtol * max|expected|; logs the worst difference. */
export function assertAllClose(
  name: string,
  got: Tensor,
  expected: Tensor,
  options: { atol?: number; rtol?: number } = {},
): number {
  const { atol = 1e-5, rtol = 0 } = options;
  assertEquals(got.shape, expected.shape, `${name} shape`);
  const [worst, scale] = got.numel === 0 ? [0, 0] : tidy(() => {
    const g = got.detach().to({ dtype: "float64" });
    const e = expected.detach().to({ dtype: "float64" });
    // Non-finite elements (a causal mask's -inf) must match exactly; they count as 0 or as an infinite difference.
    const bothFinite = g.isfinite().logicalAnd(e.isfinite());
    const same = g.eq(e).logicalOr(g.isnan().logicalAnd(e.isnan()));
    const zero = Tensor.zeros(e.shape, { dtype: "float64" });
    const nonFinite = where(same, zero, Tensor.full(e.shape, Infinity, { dtype: "float64" }));
    const diff = where(bothFinite, g.sub(e).abs(), nonFinite);
    const scale = e.numel === 0 ? 0 : where(e.isfinite(), e.abs(), zero).amax().item();
    return [diff.amax().item(), scale];
  });
  const limit = atol + rtol * scale;
  console.log(`  ${name}: max |diff| ${worst.toExponential(2)} (limit ${limit.toExponential(2)})`);
  if (!(worst <= limit)) {
    throw new AssertionError(`${name}: max |diff| ${worst} exceeds ${limit} (max |expected| ${scale})`);
  }
  return worst;
}

/** In-place edits of parameters (leaves that require grad) must happen with gradient recording off. */
export function perturb(t: Tensor, low: number, high: number, offset = 0): void {
  noGrad(() => t.uniform_(low, high).add_(offset));
}

/** A Deno test that runs fn inside a scope and fails if native tensor handles outlive it. */
export function leakFreeTest(name: string, fn: () => void, options: { needsTorch?: boolean } = {}): void {
  const skip = options.needsTorch === true && noTorch;
  Deno.test({
    name: skip ? `${name} (skipped: no PyTorch)` : name,
    ignore: skip,
    fn() {
      const baseline = liveTensors();
      tidy(fn);
      assertEquals(liveTensors(), baseline, `${name}: live native tensor handles after the test`);
    },
  });
}
