# export_check.py: checks an exported backbone (deno task export backbone) against the state dict of a timm-0.5.4-style
# VisionTransformer built here with torch.nn (timm itself is not installed): same keys, same shapes, finite values.
# The safetensors file is parsed with json + struct only, so the check does not depend on the safetensors package.
# usage: python3 export_check.py FILE WIDTH DEPTH PATCH IMAGE_SIZE   (prints "ok N" or exits 1 with the differences)
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


DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


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


def main():
    path, width, depth, patch, image_size = sys.argv[1], *map(int, sys.argv[2:6])
    exported = read_safetensors(path)
    reference = VisionTransformer(width, depth, patch, image_size).state_dict()
    problems = []
    for key in sorted(set(reference) - set(exported)):
        problems.append(f"missing {key}")
    for key in sorted(set(exported) - set(reference)):
        problems.append(f"unexpected {key}")
    for key in sorted(set(reference) & set(exported)):
        if tuple(reference[key].shape) != tuple(exported[key].shape):
            problems.append(f"{key}: shape {tuple(exported[key].shape)}, timm {tuple(reference[key].shape)}")
        elif not torch.isfinite(exported[key].float()).all():
            problems.append(f"{key}: non-finite values")
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
