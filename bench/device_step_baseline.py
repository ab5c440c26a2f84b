# device_step_baseline.py: the ViT-B/16 DetailCLIP training step in PyTorch eager on a CUDA device, the baseline that
# bench/device.sh times beside bench/device_step.ts on the same card. It reuses bench/train_step_baseline.py's model,
# losses and Trainer (written from docs/model.md and docs/training.md and checked there against the golden step) with
# torch.set_default_device, so every tensor they create lands on the GPU, and bf16 autocast as the official --amp path
# would. The official teacher materialises the full (B, H, N, N) attention maps (it returns them for the CLS rows); that
# is the baseline. Variants: "removed" (student patch head at the removed patches only, as ours) and, with --full, the
# official one. Prints one JSON line per variant. Usage: python3 bench/device_step_baseline.py --batch N [--steps S]
# [--warmup W]
#        [--precision bf16|fp32] [--peak-tflops P] [--full]
import argparse
import importlib.util
import json
import os
import sys
import time

FLOPS_PER_SAMPLE = 240.7e9  # docs/model.md#flops


def parse_args():
    parser = argparse.ArgumentParser(description="DetailCLIP ViT-B/16 training step, PyTorch eager, CUDA")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test of the script)")
    parser.add_argument("--full", action="store_true", help="also time the official full student patch head")
    return parser.parse_args()


def load_reference_module():
    # train_step_baseline.py parses its own arguments at import (for OPENBLAS_NUM_THREADS): give it a harmless argv.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step_baseline.py")
    spec = importlib.util.spec_from_file_location("train_step_baseline", path)
    module = importlib.util.module_from_spec(spec)
    saved = sys.argv
    sys.argv = [path, "--ref", "unused"]
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = saved
    return module


# ViT-B/16 DetailCLIP (docs/model.md#model-presets, docs/training.md#hyperparameters) in the hyper-parameter names
# train_step_baseline.DetailCLIP reads.
HYPER = dict(vision_width=768, depth=12, heads=12, text_width=512, text_layers=12, text_heads=8, embed_dim=512,
             vocab=49408, context=77, head_hidden=2048, bottleneck=256, out_dim=8192, decoder_heads=16, seed=0)
META = dict(hyper=HYPER, mask_ratio=0.5, lr=5e-4, wd=0.5, betas=[0.9, 0.98], eps=1e-8, student_temp=0.1,
            center_momentum=0.9, teacher_temp_cls=0.04, teacher_temp_patch=0.04)


def main():
    args = parse_args()
    ref = load_reference_module()
    torch = ref.torch
    cuda = args.device != "cpu"
    if cuda and not torch.cuda.is_available():
        print("device_step_baseline.py: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as the official --amp runs; bf16 matmuls are unaffected
        torch.set_default_device(args.device)
    torch.manual_seed(0)
    variants = [("removed", True)] + ([("full", False)] if args.full else [])
    for name, removed_only in variants:
        model = ref.DetailCLIP(META["hyper"], META["mask_ratio"])
        for p in model.parameters():
            if p.dim() >= 2:
                torch.nn.init.trunc_normal_(p, std=0.02)
        trainer = ref.Trainer(META, model.state_dict(), removed_only)
        del model
        b, ctx = args.batch, HYPER["context"]
        u, v = torch.randn(b, 3, 224, 224), torch.randn(b, 3, 224, 224)
        text = torch.randint(0, HYPER["vocab"], (b, ctx))

        def step():
            if args.precision == "bf16":
                with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16):
                    trainer.step(u, v, text, 0.999)
            else:
                trainer.step(u, v, text, 0.999)

        for _ in range(args.warmup):
            step()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            sync()
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        ms = times[len(times) // 2]
        ips = b / (ms / 1000)
        print(json.dumps(dict(impl=f"pytorch eager ({name})", torch=torch.__version__, batch=b,
                              precision=args.precision, steps=args.steps, warmup=args.warmup, ms_per_step=ms,
                              ms_min=times[0], images_per_s=ips, peak_memory_bytes=torch.cuda.max_memory_allocated() if cuda else None,
                              tflops=FLOPS_PER_SAMPLE * ips / 1e12,
                              mfu=FLOPS_PER_SAMPLE * ips / (args.peak_tflops * 1e12), peak_tflops=args.peak_tflops)),
              flush=True)
        del trainer
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
