# export_check.py: checks an exported backbone (deno task export backbone) against a reference ViT's state dict: same
# keys, same shapes, finite values, and a strict load_state_dict. The reference is timm 1.0's VisionTransformer
# (num_classes=0) when timm is importable (tools/setup.sh installs timm==1.0.29 into .tools/pylib; callers put that
# on PYTHONPATH), else a timm-0.5.4-style module built here with torch.nn (same keys and shapes, no forward). timm
# 1.0.29's state dict for this config is exactly the 0.5.4 one (its q_norm/k_norm/ls1/ls2/fc_norm/head are Identity
# and hold no tensors), so nothing is tolerated: a missing or extra key is an error either way.
# A safetensors file is parsed with json + struct only, so the check does not depend on the safetensors package; a
# .pt/.pth file is read with torch.load, which must return a plain dict of tensors (what extract_backbone_weights.py
# writes). With --values REF PREFIX, every exported tensor must also equal REF[PREFIX + key] exactly, dtype included
# (REF: a safetensors file, e.g. the checkpoint the backbone came from). With --features INPUT OUTPUT (needs --heads
# and timm), timm's forward_features(INPUT["images"]) on the loaded dict must match OUTPUT["tokens"] (B, 1+L, D), our
# tower's tokens after the final norm, within 1e-4 absolute; without timm that part is skipped, and said so.
# usage: python3 export_check.py FILE WIDTH DEPTH PATCH IMAGE_SIZE [--heads H] [--values REF PREFIX]
#                                [--features INPUT OUTPUT]
#        (prints "ok N (REFERENCE...)" or exits 1 with the differences)
import json
import struct
import sys

import torch
import torch.nn as nn

try:
    import timm
    from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer
except ImportError:
    timm = None

USAGE = "usage: export_check.py FILE WIDTH DEPTH PATCH IMAGE_SIZE [--heads H] [--values REF PREFIX] [--features INPUT OUTPUT]"
FEATURES_ATOL = 1e-4


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


def parse_options(args):
    options = {"heads": None, "values": None, "features": None}
    arity = {"--heads": 1, "--values": 2, "--features": 2}
    i = 0
    while i < len(args):
        flag = args[i]
        values = args[i + 1 : i + 1 + arity.get(flag, 0)]
        if flag not in arity or len(values) != arity[flag]:
            raise SystemExit(USAGE)
        options[flag[2:]] = int(values[0]) if flag == "--heads" else values
        i += 1 + arity[flag]
    if options["features"] is not None and options["heads"] is None:
        raise SystemExit("export_check.py: --features needs --heads (the forward depends on the head count)")
    return options


def build_reference(width, depth, patch, image_size, heads):
    """The reference module and its name: timm's VisionTransformer when importable, else the timm-style one here."""
    if timm is None:
        return VisionTransformer(width, depth, patch, image_size), "timm-style module"
    # Keys and shapes do not depend on the head count; any divisor of the width builds the same state dict.
    model = TimmVisionTransformer(img_size=image_size, patch_size=patch, embed_dim=width, depth=depth,
                                  num_heads=heads or 1, num_classes=0)
    return model, f"timm {timm.__version__}"


def compare_features(model, input_path, output_path):
    """Max |timm forward_features - ours| over every token, or a problem string."""
    images = read_safetensors(input_path)["images"].float()  # images: (B, 3, H, W)
    ours = read_safetensors(output_path)["tokens"].float()  # ours: (B, 1 + L, D)
    model.eval()
    with torch.no_grad():
        theirs = model.forward_features(images)  # theirs: (B, 1 + L, D)
    if tuple(theirs.shape) != tuple(ours.shape):
        return None, f"forward_features: shape {tuple(theirs.shape)}, ours {tuple(ours.shape)}"
    worst = (theirs - ours).abs().max().item()
    if not worst <= FEATURES_ATOL:
        return worst, f"forward_features: max abs diff {worst:.3g} > {FEATURES_ATOL:g}"
    return worst, None


def main():
    if len(sys.argv) < 6:
        raise SystemExit(USAGE)
    path, width, depth, patch, image_size = sys.argv[1], *map(int, sys.argv[2:6])
    options = parse_options(sys.argv[6:])
    exported, problems = read_exported(path)
    model, reference_name = build_reference(width, depth, patch, image_size, options["heads"])
    reference = model.state_dict()
    for key in sorted(set(reference) - set(exported)):
        problems.append(f"missing {key}")
    for key in sorted(set(exported) - set(reference)):
        problems.append(f"unexpected {key}")
    for key in sorted(set(reference) & set(exported)):
        if tuple(reference[key].shape) != tuple(exported[key].shape):
            problems.append(f"{key}: shape {tuple(exported[key].shape)}, {reference_name} {tuple(reference[key].shape)}")
        elif not torch.isfinite(exported[key].float()).all():
            problems.append(f"{key}: non-finite values")
    if options["values"] is not None:
        ref_path, prefix = options["values"]
        ref_tensors = read_safetensors(ref_path)
        for key, value in exported.items():
            ref = ref_tensors.get(prefix + key)
            if ref is None:
                problems.append(f"{key}: no {prefix + key} in {ref_path}")
            elif ref.dtype != value.dtype:
                problems.append(f"{key}: dtype {value.dtype}, reference {ref.dtype}")
            elif ref.shape != value.shape or not torch.equal(ref, value):
                problems.append(f"{key}: values differ from {prefix + key}")
    features = ""
    if not problems:
        # strict load into the reference module: the dict is usable as is
        model.load_state_dict(exported, strict=True)
        if options["features"] is not None:
            if timm is None:
                features = "; forward_features skipped: timm is not importable"
            else:
                worst, problem = compare_features(model, *options["features"])
                if problem is not None:
                    problems.append(problem)
                features = f"; forward_features max abs diff {worst:.3g}"
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"ok {len(exported)} ({reference_name}{features})")


if __name__ == "__main__":
    main()
