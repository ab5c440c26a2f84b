# openclip_step_baseline.py: one plain CLIP training step in OpenCLIP (open_clip_torch, on Debian's python3-torch
# 1.13, CPU, fp32), for bench/openclip_step.ts to time beside ours. The model is open_clip.create_model(NAME,
# pretrained=None); the loss is open_clip.loss.ClipLoss; the optimizer is torch.optim.AdamW with the param groups of
# open_clip_train/main.py (no weight decay where p.ndim < 2 or the name holds 'bn', 'ln', 'bias' or 'logit_scale').
# One step, as open_clip_train/train.py runs it (without autocast, one process): forward, loss, backward, step,
# zero_grad, then logit_scale.clamp_(0, log 100). Inputs are deterministic and built the same way on our side.
# Usage: python3 bench/openclip_step_baseline.py [--model ViT-B-16] [--batch B] [--steps N] [--threads T]
#        [--warmup W] [--serve]; prints JSON lines (ms_per_step is the median).
# OpenCLIP is not a dependency of the project; install it (no network needed) with:
#   pip install -q --no-deps --target .tools/openclip open_clip_torch==3.3.0 ftfy==6.3.1 tqdm wcwidth huggingface_hub
import argparse
import json
import math
import os
import sys
import time

INSTALL = ("pip install -q --no-deps --target .tools/openclip open_clip_torch==3.3.0 ftfy==6.3.1 tqdm wcwidth "
           "huggingface_hub")


def threads_argument(argv):
    """--threads N / --threads=N from the command line, before argparse runs (default 1)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# OpenBLAS sizes its own pool from the environment when libtorch loads it, and torch.set_num_threads does not
# resize it: pin it to --threads unless the caller chose (as bench/train_step_baseline.py does).
os.environ.setdefault("OPENBLAS_NUM_THREADS", threads_argument(sys.argv))

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".tools", "openclip"))
try:
    import contextlib  # noqa: E402

    # huggingface_hub prints its optional-import failures on stdout, which carries our JSON lines: send them to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        import open_clip  # noqa: E402
        from open_clip.loss import ClipLoss  # noqa: E402
except ImportError as e:
    print(json.dumps({"error": f"open_clip is not importable ({e}); install it with: {INSTALL}"}), flush=True)
    sys.exit(3)


def parse_args():
    parser = argparse.ArgumentParser(description="One OpenCLIP training step, timed.")
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--wd", type=float, default=0.5)
    parser.add_argument("--serve", action="store_true", help="time on request over stdin (bench/openclip_step.ts)")
    return parser.parse_args()


def inputs(batch, image_size, context, vocab):
    """The deterministic inputs bench/openclip_step.ts builds too: a linspace image batch and cycling token ids."""
    images = torch.linspace(-2.0, 2.0, batch * 3 * image_size * image_size).reshape(batch, 3, image_size, image_size)
    text = (torch.arange(batch * context) * 7919 + 13).remainder(vocab).reshape(batch, context)
    return images, text


def param_groups(model, wd):
    """open_clip_train/main.py's grouping."""
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    gain_or_bias = [p for n, p in named if exclude(n, p) and p.requires_grad]
    rest = [p for n, p in named if not exclude(n, p) and p.requires_grad]
    return [{"params": gain_or_bias, "weight_decay": 0.0}, {"params": rest, "weight_decay": wd}]


class Trainer:
    def __init__(self, args):
        torch.manual_seed(0)
        self.model = open_clip.create_model(args.model, pretrained=None, output_dict=True)  # as open_clip_train does
        self.model.train()
        cfg = open_clip.get_model_config(args.model)
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        self.images, self.text = inputs(args.batch, vision["image_size"], text["context_length"], text["vocab_size"])
        self.loss = ClipLoss()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, args.wd), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
        self.config = cfg

    def step(self):
        out = self.model(self.images, self.text)
        loss = self.loss(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return loss

    def run(self, steps):
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            times.append((time.perf_counter() - start) * 1000)
        return times


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    trainer = Trainer(args)
    params = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    first = float(trainer.step())
    header = {"torch": torch.__version__, "open_clip": open_clip.__version__, "model": args.model,
              "config": trainer.config, "batch": args.batch, "threads": torch.get_num_threads(),
              "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "params": params,
              "trainable_params": trainable, "first_step_loss": first}
    print(json.dumps(header), flush=True)
    trainer.run(args.warmup)
    if args.serve:
        # Line protocol: {"ready": true} after the warmup, then each stdin line "N" is answered with
        # {"ms_all": [...]} (N timed steps) until "quit" or end of input.
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            print(json.dumps({"ms_all": trainer.run(int(words[0]))}), flush=True)
        return 0
    times = trainer.run(args.steps)
    print(json.dumps({"ms_per_step": median(times), "ms_min": min(times), "ms_all": times}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
