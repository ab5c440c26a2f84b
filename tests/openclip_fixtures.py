"""openclip_fixtures.py: weights and reference embeddings made by open_clip itself, for tests/openclip_test.ts.

Usage (PYTHONPATH must reach open_clip 3.3.0, e.g. .tools/openclip-pylib):
  openclip_fixtures.py vitb32 OUT_DIR     open_clip's ViT-B-32 (GELU), random weights perturbed so that no LayerNorm is
                                          the identity: OUT_DIR/vitb32.safetensors (save_file of the state dict) and
                                          OUT_DIR/vitb32_io.safetensors (images, token ids, encode_image/encode_text
                                          outputs L2-normalised, logit_scale)
  openclip_fixtures.py small_quickgelu OUT_DIR
                                          a small QuickGELU ViT CLIP (open_clip.CLIP(..., quick_gelu=True)):
                                          small.pt (an open_clip_train checkpoint: epoch + state_dict with DDP's
                                          `module.`), small_jit.pt (torch.jit.script + torch.jit.save, the container
                                          OpenAI's released .pt files use) and small_io.safetensors
  openclip_fixtures.py tiny_synthetic OUT_DIR
                                          a QuickGELU ViT CLIP with our CLIP_tiny_synthetic's dimensions:
                                          tiny.safetensors and tiny_io.safetensors (random token ids, encode_text)
Prints "ok" on success.
"""
import sys

import open_clip
import torch
from safetensors.torch import save_file

CAPTIONS = ["a photo of a cat", "a diagram of a cell, with labels", ""]


def perturb(model):
    # Random open_clip weights leave every LayerNorm at (1, 0): a swapped ln_pre/ln_post would still pass.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.logit_scale.fill_(2.5)


def reference(model, image_size, out):
    model.eval()
    images = torch.randn(2, 3, image_size, image_size)
    tokens = open_clip.tokenize(CAPTIONS)
    with torch.no_grad():
        image_embeds = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        text_embeds = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    save_file({
        "images": images.contiguous(),
        "tokens": tokens.contiguous(),
        "image_embeds": image_embeds.contiguous(),
        "text_embeds": text_embeds.contiguous(),
        "logit_scale": model.logit_scale.detach().reshape(()).contiguous(),
    }, out)


def main():
    command, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    if command == "vitb32":
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
        perturb(model)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/vitb32.safetensors")
        reference(model, 224, f"{out}/vitb32_io.safetensors")
    elif command == "small_quickgelu":
        vision = open_clip.CLIPVisionCfg(layers=2, width=128, head_width=64, patch_size=16, image_size=64)
        text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2, layers=2)
        model = open_clip.CLIP(embed_dim=64, vision_cfg=vision, text_cfg=text, quick_gelu=True)
        assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
        perturb(model)
        state = {f"module.{k}": v for k, v in model.state_dict().items()}
        torch.save({"epoch": 3, "name": "small", "state_dict": state}, f"{out}/small.pt")
        reference(model, 64, f"{out}/small_io.safetensors")
        torch.jit.save(torch.jit.script(model), f"{out}/small_jit.pt")
    elif command == "tiny_synthetic":
        # The dimensions of our CLIP_tiny_synthetic preset, QuickGELU like our text tower, for train --pretrained.
        vision = open_clip.CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=8, image_size=64)
        text = open_clip.CLIPTextCfg(context_length=32, vocab_size=1024, width=64, heads=4, layers=2)
        model = open_clip.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=True)
        perturb(model)
        model.eval()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/tiny.safetensors")
        tokens = torch.randint(1, 1024, (3, 32))
        with torch.no_grad():
            text_embeds = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        save_file({"tokens": tokens, "text_embeds": text_embeds.contiguous()}, f"{out}/tiny_io.safetensors")
    else:
        raise SystemExit(f"unknown command {command}")
    print("ok")


if __name__ == "__main__":
    main()
