# train_step_baseline.py: one official DetailCLIP training step in PyTorch eager (Debian's python3-torch 1.13, CPU,
# fp32), written from docs/model.md and docs/training.md for bench/train_step.ts to time beside ours. It first checks that it is
# the official computation (losses equal meta.json's, masks equal outputs.safetensors', parameters after the step
# equal after.safetensors'), then times N steps of: EMA update, teacher (with CLS attention), masks, student,
# decoder, heads, text, losses with the center update, backward, AdamW (official groups), zero_grad, clamp.
# Two variants, both timed: the official one, which evaluates the student iBOT head on every patch, and one that
# evaluates it only at the removed patches (all the patch loss reads,
# docs/parity.md#student-patch-head-at-removed-positions), as our production path does. The CLS overwrite is the
# out-of-place form of docs/parity.md#cls-overwrite (the official in-place one fails without autocast).
# Usage: python3 bench/train_step_baseline.py --ref DIR [--steps N] [--threads T] [--warmup W] [--phases]
#        [--skip-verify] [--serve]; prints one JSON line (ms_per_step is the median).
import argparse
import json
import math
import os
import struct
import sys
import time
from collections import OrderedDict


def parse_args():
    parser = argparse.ArgumentParser(description="One official DetailCLIP training step in PyTorch eager, "
                                     "checked against golden files, then timed.")
    parser.add_argument("--ref", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-verify", action="store_true")
    parser.add_argument("--phases", action="store_true", help="also report the median time of each phase")
    parser.add_argument("--serve", action="store_true", help="time on request over stdin (bench/train_step.ts)")
    return parser.parse_args()


def threads_argument(argv):
    """--threads N / --threads=N from the command line, before argparse runs (default 1)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# OpenBLAS (Debian's libblas.so.3 when libopenblas0 is installed) sizes its own thread pool from the environment
# when libtorch loads it, and torch.set_num_threads does not resize it (BLAS_INFO=generic): pin it to --threads
# unless the caller chose.
os.environ.setdefault("OPENBLAS_NUM_THREADS", threads_argument(sys.argv))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---- safetensors (no package installed): 8-byte little-endian header length, JSON header, raw little-endian data.
DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        if end == start:
            out[name] = torch.empty(info["shape"], dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(data[base + start:base + end]), dtype=dtype).reshape(info["shape"])
    return out


# ---- model (official module names, so the golden weights load with strict=True) ---------------------------------
class Attention(nn.Module):
    """timm 0.5.4 Attention; also returns the probabilities (the teacher reads their CLS rows)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, hd)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, H, N, N)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x), attn


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm 0.5.4 pre-norm Block (LN eps 1e-6, no layer-scale, no drop-path)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x):
        y, attn = self.attn(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, L, D)


class MaskVisionTransformer(nn.Module):
    def __init__(self, dim, depth, heads, patch, grid):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.patch_embed.proj.weight.requires_grad_(False)  # frozen random patch conv (docs/model.md#vision-encoder)
        self.patch_embed.proj.bias.requires_grad_(False)

    def forward_features(self, x, ids_keep=None, need_attn=False):
        x = self.patch_embed(x) + self.pos_embed[:, 1:]  # (B, L, D)
        B, _, D = x.shape
        if ids_keep is not None:  # mask_model: gather the kept tokens
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, D))  # (B, K, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1)  # (B, 1+K, D)
        cls_rows = []
        for blk in self.blocks:
            x, attn = blk(x)
            if need_attn:
                # (B, H, L): only the CLS rows are kept (docs/parity.md#teacher-attention-memory)
                cls_rows.append(attn[:, :, 0, 1:])
        x = self.norm(x)
        if not need_attn:
            return x, None
        return x, torch.stack(cls_rows).mean(0).mean(1)  # mean over layers, then heads: (B, L)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class TextAttention(nn.Module):
    """nn.MultiheadAttention's math (torch 1.13 F.multi_head_attention_forward), batch-first: packed in_proj rows
    [q; k; v], q / sqrt(hd), baddbmm with the additive mask, softmax, bmm, out_proj."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B, L, D = x.shape
        hd = D // self.heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, L, self.heads, hd).transpose(1, 2).reshape(B * self.heads, L, hd) for t in (q, k, v))
        attn = torch.baddbmm(mask, q / math.sqrt(hd), k.transpose(-2, -1)).softmax(dim=-1)  # (B·H, L, L)
        out = torch.bmm(attn, v).reshape(B, self.heads, L, hd).transpose(1, 2).reshape(B, L, D)
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn = TextAttention(dim, heads)
        self.ln_1 = nn.LayerNorm(dim)  # CLIP's fp32-casting LayerNorm is the plain one in fp32 (eps 1e-5)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(dim, 4 * dim)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * dim, dim))]))
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, dim, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(dim, heads) for _ in range(layers)])

    def forward(self, x, mask):
        for blk in self.resblocks:
            x = blk(x, mask)
        return x


class IBOTHead(nn.Module):
    """iBOT head: 3-layer GELU MLP, L2 normalisation, weight-normalised bias-free last layer with g frozen at 1,
    shared between CLS and patch tokens (last_layer2 is last_layer)."""

    def __init__(self, dim, hidden, bottleneck, out_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False
        self.last_layer2 = self.last_layer

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class DetailCLIP(nn.Module):
    def __init__(self, h, mask_ratio):
        super().__init__()
        D, T, E = h["vision_width"], h["text_width"], h["embed_dim"]
        self.patch, self.grid = 16, 224 // 16
        self.mask_ratio = mask_ratio
        vit = lambda: MaskVisionTransformer(D, h["depth"], h["heads"], self.patch, self.grid)  # noqa: E731
        head = lambda: IBOTHead(D, h["head_hidden"], h["bottleneck"], h["out_dim"])  # noqa: E731
        self.visual = vit()
        self.transformer = TextTransformer(T, h["text_layers"], h["text_heads"])
        self.token_embedding = nn.Embedding(h["vocab"], T)
        self.positional_embedding = nn.Parameter(torch.empty(h["context"], T))
        self.ln_final = nn.LayerNorm(T)
        self.image_projection = nn.Parameter(torch.empty(D, E))
        self.text_projection = nn.Parameter(torch.empty(T, E))
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.visual_ema = vit()
        self.transformer_e = TextTransformer(T, h["text_layers"], h["text_heads"])
        self.image_projection_e = nn.Parameter(torch.empty(D, E))
        self.text_projection_e = nn.Parameter(torch.empty(T, E))
        self.decoder_embed = nn.Linear(D, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, D), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(D, h["decoder_heads"])])
        self.decoder_norm = nn.LayerNorm(D, eps=1e-6)
        self.reconstruction_pred = nn.Linear(D, self.patch * self.patch * 3)
        self.ibot_head = head()
        self.ibot_head_e = head()
        ctx = h["context"]
        self.text_mask = torch.full((ctx, ctx), float("-inf")).triu_(1)  # an attribute, not state
        for p in self.teacher_params():
            p.requires_grad_(False)

    def teacher_params(self):
        return [*self.visual_ema.parameters(), *self.transformer_e.parameters(), *self.ibot_head_e.parameters(),
                self.image_projection_e, self.text_projection_e]

    def student_params(self):
        return [*self.visual.parameters(), *self.transformer.parameters(), *self.ibot_head.parameters(),
                self.image_projection, self.text_projection]

    @torch.no_grad()
    def ema_update(self, m):  # A-CLIP: θ_t ← m·θ_t + (1−m)·θ_s, parameter by parameter
        for t, s in zip(self.teacher_params(), self.student_params()):
            t.data = t.data * m + s.data * (1.0 - m)

    def get_att_mask(self, attn):
        """A-CLIP/DetailCLIP get_att_mask: 14×14 → 7×7 bilinear, keep the top int(49·ratio)+1 cells
        (docs/model.md#attention-guided-token-removal)."""
        B, g = attn.shape[0], self.grid
        cells = g // 2
        masks = torch.ones((B, cells * cells), dtype=torch.bool)
        pooled = F.interpolate(attn.reshape(-1, g, g).unsqueeze(1), (cells, cells), mode="bilinear")
        pooled = pooled.reshape(B, -1)
        n = int(pooled.shape[1] * self.mask_ratio)
        keep = torch.argsort(pooled, dim=1, descending=True)[:, :n + 1]
        masks.scatter_(1, keep, False)
        return masks.reshape(B, cells, 1, cells, 1).expand(B, cells, 2, cells, 2).reshape(B, g * g)  # (B, L)

    @staticmethod
    def mask_model_ids(mask):
        """mask_model's index work: kept tokens first (a stable sort, docs/model.md#student-token-removal),
        ids_restore its inverse."""
        ids = torch.sort(mask.long(), dim=1, stable=True)[1]
        ids_restore = torch.argsort(ids, dim=1)
        n_keep = mask.shape[1] - int(mask[0].sum())
        return ids[:, :n_keep], ids[:, n_keep:], ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)  # (B, 1+K, D)
        B, K1, D = x.shape
        mask_tokens = self.mask_token.repeat(B, ids_restore.shape[1] + 1 - K1, 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, D))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed  # (B, 1+L, D)
        for blk in self.decoder_blocks:
            x, _ = blk(x)
        return self.decoder_norm(x)

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding  # (B, T, W)
        x = self.ln_final(self.transformer(x, self.text_mask))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def forward(self, u, v, text, m, removed_only=False, lap=lambda phase: None):
        with torch.no_grad():
            self.ema_update(m)
            lap("ema")
            u_e, attn_u = self.visual_ema.forward_features(u, need_attn=True)
            v_e, attn_v = self.visual_ema.forward_features(v, need_attn=True)
            lap("teacher")
            t_logits = self.ibot_head_e(torch.cat([u_e, v_e]))  # (2B, 1+L, K)
            teacher_cls, teacher_patch = t_logits[:, 0], t_logits[:, 1:]
            lap("teacher_head")
        mask_u, mask_v = self.get_att_mask(attn_u), self.get_att_mask(attn_v)
        keep_u, removed_u, restore_u = self.mask_model_ids(mask_u)
        keep_v, removed_v, restore_v = self.mask_model_ids(mask_v)
        lap("selection")
        latent_u, _ = self.visual.forward_features(u, keep_u)
        latent_v, _ = self.visual.forward_features(v, keep_v)
        img_u = latent_u[:, 0] @ self.image_projection
        img_v = latent_v[:, 0] @ self.image_projection
        lap("student")
        u_s = self.forward_decoder(latent_u, restore_u)
        v_s = self.forward_decoder(latent_v, restore_v)
        u_rec = self.reconstruction_pred(u_s)[:, 1:]
        v_rec = self.reconstruction_pred(v_s)[:, 1:]
        lap("decoder")
        removed = None
        if not removed_only:
            # Official: the whole decoder sequence with the encoder CLS in front (out of place,
            # docs/parity.md#cls-overwrite).
            u_s = torch.cat([latent_u[:, :1], u_s[:, 1:]], dim=1)
            v_s = torch.cat([latent_v[:, :1], v_s[:, 1:]], dim=1)
            s_logits = self.ibot_head(torch.cat([u_s, v_s]))  # (2B, 1+L, K)
            student_cls, student_patch = s_logits[:, 0], s_logits[:, 1:]
        else:
            # Only the CLS and the removed patches (docs/parity.md#student-patch-head-at-removed-positions): rows are
            # the same, so the losses are the same.
            removed = torch.cat([removed_u, removed_v])  # (2B, R), raster order
            patches = torch.cat([u_s[:, 1:], v_s[:, 1:]])  # (2B, L, D)
            rows = torch.gather(patches, 1, removed.unsqueeze(-1).expand(-1, -1, patches.shape[2]))
            cls = torch.cat([latent_u[:, :1], latent_v[:, :1]])  # (2B, 1, D)
            s_logits = self.ibot_head(torch.cat([cls, rows], dim=1))  # (2B, 1+R, K)
            student_cls, student_patch = s_logits[:, 0], s_logits[:, 1:]
        lap("student_head")
        text_embed = self.encode_text(text)
        lap("text")
        return dict(img_u=img_u, img_v=img_v, text=text_embed, logit_scale=self.logit_scale.exp(),
                    teacher=(teacher_cls, teacher_patch), student=(student_cls, student_patch), removed=removed,
                    u_rec=u_rec, v_rec=v_rec, mask_u=mask_u, mask_v=mask_v)


# ---- losses (SLIP CLIP loss, iBOT loss, MAE reconstruction) --------------------------------------------------------
def clip_view_loss(image, text, scale, labels):
    image, text = F.normalize(image, dim=-1, p=2), F.normalize(text, dim=-1, p=2)
    logits_per_image = scale * image @ text.t()
    logits_per_text = scale * text @ image.t()
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    return loss, logits_per_image


class IBOTLoss:
    def __init__(self, out_dim, student_temp, center_momentum, temp_cls, temp_patch):
        self.center = torch.zeros(1, out_dim)
        self.center2 = torch.zeros(1, 1, out_dim)
        self.student_temp, self.m = student_temp, center_momentum
        self.temp_cls, self.temp_patch = temp_cls, temp_patch

    def __call__(self, student, teacher, masks, removed=None):
        student_cls, student_patch = student
        teacher_cls, teacher_patch = teacher
        s_cls = (student_cls / self.student_temp).chunk(2)
        s_patch = (student_patch / self.student_temp).chunk(2)
        t_cls = F.softmax((teacher_cls - self.center) / self.temp_cls, dim=-1).detach().chunk(2)
        t_patch_all = teacher_patch
        weights = [mk.float() for mk in masks]
        if removed is not None:  # teacher targets and mask weights at the removed rows only
            idx = removed.unsqueeze(-1).expand(-1, -1, teacher_patch.shape[2])
            t_patch_all = torch.gather(teacher_patch, 1, idx)
            weights = [w.gather(1, r) for w, r in zip(weights, removed.chunk(2))]
        t_patch = F.softmax((t_patch_all - self.center2) / self.temp_patch, dim=-1).detach().chunk(2)
        loss_cls, loss_patch = 0, 0
        for q in range(2):
            for v in range(2):
                if q == v:
                    lp = torch.sum(-t_patch[q] * F.log_softmax(s_patch[v], dim=-1), dim=-1)
                    lp = torch.sum(lp * weights[v], dim=-1) / masks[v].float().sum(dim=-1).clamp(min=1.0)
                    loss_patch = loss_patch + lp.mean()
                else:
                    lc = torch.sum(-t_cls[q] * F.log_softmax(s_cls[v], dim=-1), dim=-1)
                    loss_cls = loss_cls + lc.mean()
        loss_cls, loss_patch = loss_cls / 2, loss_patch / 2
        with torch.no_grad():  # update_center, after the losses (one rank: the all-reduce is the identity)
            cls_center = torch.sum(teacher_cls, dim=0, keepdim=True) / len(teacher_cls)
            self.center = self.center * self.m + cls_center * (1 - self.m)
            patch_center = torch.sum(teacher_patch.mean(1), dim=0, keepdim=True) / len(teacher_patch)
            self.center2 = self.center2 * self.m + patch_center * (1 - self.m)
        return loss_cls, loss_patch


def patchify(imgs, p):
    N, C, H, W = imgs.shape
    h, w = H // p, W // p
    x = imgs.reshape(N, C, h, p, w, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(N, h * w, p * p * C)


def reconst_loss(pred, imgs, mask, p):
    target = patchify(imgs, p)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def detailclip_loss(out, u, v, ibot, labels, patch):
    loss_u, _ = clip_view_loss(out["img_u"], out["text"], out["logit_scale"], labels)
    loss_v, logits_v = clip_view_loss(out["img_v"], out["text"], out["logit_scale"], labels)
    clip = (loss_u + loss_v) / 2
    rec = (reconst_loss(out["u_rec"], u, out["mask_u"], patch) + reconst_loss(out["v_rec"], v, out["mask_v"], patch)) / 2
    cls, patch_loss = ibot(out["student"], out["teacher"], [out["mask_u"], out["mask_v"]], out["removed"])
    loss = clip + rec + patch_loss + cls
    acc = 100.0 * (logits_v.argmax(-1) == labels).float().mean()
    return loss, dict(loss=loss, contra_loss_1=loss_u, contra_loss_2=loss_v, reconst_loss=rec,
                      ibot_patch_loss=patch_loss, ibot_cls_loss=cls, ibot_loss=cls + patch_loss, clip_acc=acc)


# ---- one training step, as the official loop runs it ---------------------------------------------------------------
class Trainer:
    def __init__(self, meta, weights, removed_only):
        self.meta = meta
        self.model = DetailCLIP(meta["hyper"], meta["mask_ratio"])
        self.model.load_state_dict(weights, strict=True)
        self.model.train()
        self.removed_only = removed_only
        self.ibot = IBOTLoss(meta["hyper"]["out_dim"], meta.get("student_temp", 0.1), meta.get("center_momentum", 0.9),
                             meta.get("teacher_temp_cls", 0.04), meta.get("teacher_temp_patch", 0.04))
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "bias" in n or "ln" in n or "bn" in n else decay).append(p)
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": meta["wd"]},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=meta["lr"], betas=tuple(meta["betas"]), eps=meta["eps"])

    def step(self, u, v, text, momentum, lap=lambda phase: None):
        for group in self.optimizer.param_groups:
            group["lr"] = self.meta["lr"]
        out = self.model(u, v, text, momentum, removed_only=self.removed_only, lap=lap)
        labels = torch.arange(text.shape[0])
        loss, metrics = detailclip_loss(out, u, v, self.ibot, labels, self.model.patch)
        lap("loss")
        loss.backward()
        lap("backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, 4.6052)
        lap("optimizer")
        return out, metrics


def verify(ref, meta, weights, inputs, removed_only):
    """One step from the golden weights against the golden losses, masks and parameters after the step."""
    problems = []
    trainer = Trainer(meta, weights, removed_only)
    out, metrics = trainer.step(inputs["u"], inputs["v"], inputs["text"], float(inputs["momentum"]))
    worst_loss = 0.0
    for name, expected in meta["losses"].items():
        got = float(metrics[name])
        err = abs(got - expected) / max(abs(expected), 1e-1)  # relative, or absolute near zero
        worst_loss = max(worst_loss, err)
        if err > 1e-4:
            problems.append(f"loss {name}: ours {got!r}, golden {expected!r}")
    outputs = load_safetensors(f"{ref}/outputs.safetensors")
    for name in ("mask_u", "mask_v"):
        if not torch.equal(out[name], outputs[name]):
            problems.append(f"{name}: {int((out[name] != outputs[name]).sum())} entries differ from golden")
    worst_after = 0.0
    try:
        after, grads = load_safetensors(f"{ref}/after.safetensors"), load_safetensors(f"{ref}/grads.safetensors")
    except FileNotFoundError:
        after, grads = {}, {}
    state = trainer.model.state_dict()
    for name, expected in after.items():
        where = grads[name].abs() > 1e-6 if name in grads else torch.ones_like(expected, dtype=torch.bool)
        if where.any():
            err = float((state[name] - expected).abs()[where].max())
            worst_after = max(worst_after, err)
            if err > 1e-5:
                problems.append(f"after-step {name}: max |Δ| {err:.3g} > 1e-5")
    return {"losses_max_rel": worst_loss, "masks_equal": not any(p.startswith("mask") for p in problems),
            "after_max_abs": worst_after, "problems": problems}


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class TimedTrainer:
    """A Trainer on the golden inputs that times its steps (ms), optionally phase by phase."""

    def __init__(self, meta, weights, inputs, removed_only):
        self.trainer = Trainer(meta, weights, removed_only)
        self.args = (inputs["u"], inputs["v"], inputs["text"], float(inputs["momentum"]))

    def run(self, steps, phases=False):
        """Times `steps` steps: (ms per step, {phase: ms per step}); the phases are empty unless asked for."""
        times, laps, last = [], {}, 0.0

        def lap(phase):  # ms since the previous lap (only with phases: the timed steps pass a no-op)
            nonlocal last
            now = time.perf_counter()
            laps.setdefault(phase, []).append((now - last) * 1000)
            last = now

        for _ in range(steps):
            start = last = time.perf_counter()
            self.trainer.step(*self.args, lap=lap if phases else (lambda phase: None))
            times.append((time.perf_counter() - start) * 1000)
        return times, laps


def summary(times, laps=None):
    result = {"ms_per_step": median(times), "ms_min": min(times), "ms_all": times}
    if laps:
        result["phases_ms"] = {phase: median(values) for phase, values in laps.items()}
    return result


def serve(trainers, warmup):
    """Line protocol for bench/train_step.ts, so its rounds interleave with ours under the same machine load:
    prints {"ready": true} after the warmup, then answers each stdin line "full N" / "removed N" (optionally
    followed by "phases") with {"ms_all": [...], "phases_ms_all": {phase: [...]}} (N timed steps of that variant)
    until "quit" or end of input."""
    for t in trainers.values():
        t.run(warmup)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        times, laps = trainers[words[0]].run(int(words[1]), phases="phases" in words[2:])
        print(json.dumps({"ms_all": times, "phases_ms_all": laps}), flush=True)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    ref = args.ref.rstrip("/")
    with open(f"{ref}/meta.json") as f:
        meta = json.load(f)
    weights = load_safetensors(f"{ref}/weights.safetensors")
    inputs = load_safetensors(f"{ref}/inputs.safetensors")
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "steps": args.steps, "warmup": args.warmup}
    if not args.skip_verify:
        checks = {name: verify(ref, meta, weights, inputs, flag)
                  for name, flag in (("full_patch_head", False), ("removed_only", True))}
        result["verify"] = checks
        failures = [f"{name}: {p}" for name, c in checks.items() for p in c["problems"]]
        result["verified"] = not failures
        if failures:
            print("train_step_baseline: FAILED to reproduce the golden step, so its timings would not be comparable:",
                  file=sys.stderr)
            for line in failures:
                print(f"  {line}", file=sys.stderr)
            print(json.dumps(result), flush=True)
            return 1
    trainers = {"full": TimedTrainer(meta, weights, inputs, False), "removed": TimedTrainer(meta, weights, inputs, True)}
    if args.serve:
        print(json.dumps(result), flush=True)
        serve(trainers, args.warmup)
        return 0
    for name, key in (("full", "full_patch_head"), ("removed", "removed_only")):
        trainers[name].run(args.warmup)
        result[key] = summary(*trainers[name].run(args.steps, args.phases))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
