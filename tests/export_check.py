# export_check.py: checks an exported backbone (deno task export backbone) against the state dict of a timm-0.5.4-style
# VisionTransformer built here with torch.nn (timm itself is not installed): same keys, same shapes, finite values.
# A safetensors file is parsed with json + struct only, so the check does not depend on the safetensors package; a
# .pt/.pth file is read with torch.load, which must return a plain dict of tensors (what extract_backbone_weights.py
# writes). With --values REF PREFIX, every exported tensor must also equal REF[PREFIX + key] exactly, dtype included
# (REF: a safetensors file, e.g. the checkpoint the backbone came from).
# usage: python3 export_check.py FILE WIDTH DEPTH PATCH IMAGE_SIZE [--values REF PREFIX]
#        (prints "ok N" or exits 1 with the differences)
import json
import struct
import sys

import torch
import torch.nn as nn


class Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


class VisionTransformer(nn.Module):
    """timm 0.5.4 ViT without a head (num_classes=0): the keys extract_backbone_weights.py produces."""

    def __init__(self, width, depth, patch, image_size):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, width))
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.norm = nn.LayerNorm(width, eps=1e-6)


DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
          "I64": (torch.int64, 8), "I32": (torch.int32, 4), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, size = DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        raw = bytearray(data[base + begin : base + end])
        out[name] = torch.frombuffer(raw, dtype=dtype).reshape(entry["shape"]) if end > begin else torch.zeros(entry["shape"], dtype=dtype)
    return out


def read_exported(path):
    if not path.endswith((".pt", ".pth")):
        return read_safetensors(path), []
    loaded = torch.load(path, map_location="cpu")
    problems = []
    if type(loaded) is not dict:
        problems.append(f"torch.load returned {type(loaded).__name__}, not a dict")
        return {}, problems
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key}: a {type(value).__name__}, not a tensor")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}, problems


def main():
    path, width, depth, patch, image_size = sys.argv[1], *map(int, sys.argv[2:6])
    exported, problems = read_exported(path)
    reference = VisionTransformer(width, depth, patch, image_size).state_dict()
    for key in sorted(set(reference) - set(exported)):
        problems.append(f"missing {key}")
    for key in sorted(set(exported) - set(reference)):
        problems.append(f"unexpected {key}")
    for key in sorted(set(reference) & set(exported)):
        if tuple(reference[key].shape) != tuple(exported[key].shape):
            problems.append(f"{key}: shape {tuple(exported[key].shape)}, timm {tuple(reference[key].shape)}")
        elif not torch.isfinite(exported[key].float()).all():
            problems.append(f"{key}: non-finite values")
    if len(sys.argv) > 6:
        if sys.argv[6] != "--values" or len(sys.argv) != 9:
            raise SystemExit("usage: export_check.py FILE WIDTH DEPTH PATCH IMAGE_SIZE [--values REF PREFIX]")
        ref_tensors, prefix = read_safetensors(sys.argv[7]), sys.argv[8]
        for key, value in exported.items():
            ref = ref_tensors.get(prefix + key)
            if ref is None:
                problems.append(f"{key}: no {prefix + key} in {sys.argv[7]}")
            elif ref.dtype != value.dtype:
                problems.append(f"{key}: dtype {value.dtype}, reference {ref.dtype}")
            elif ref.shape != value.shape or not torch.equal(ref, value):
                problems.append(f"{key}: values differ from {prefix + key}")
    if not problems:
        # strict load into the timm-style module: the dict is usable as is
        model = VisionTransformer(width, depth, patch, image_size)
        model.load_state_dict(exported, strict=True)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"ok {len(exported)}")


if __name__ == "__main__":
    main()
