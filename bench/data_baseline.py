# data_baseline.py: the Python side of bench/data.ts, run by it with /usr/bin/python3 (Debian's python3-pil,
# python3-torch, python3-torchvision). Three commands, each printing one JSON line:
#   make DIR SMALL LARGE   writes SMALL 500x375 and LARGE 1600x1200 JPEGs (quality 90, 4:2:0) to DIR
#   images DIR REPEATS     the official train pipeline (docs/data.md#image-transforms; PIL + torchvision, two
#                          views) on every DIR/*.jpg, on one thread; the best of REPEATS passes
#   tokens MERGES FILE [openai]
#                          OpenAI's SimpleTokenizer on the captions in FILE (a JSON list), context 77; the best of 3
#                          passes, each with a fresh cache. With `openai`: OpenAI's simple_tokenizer.py verbatim
#                          (tests/openai_simple_tokenizer.py, needs python3-regex; ftfy when importable, else NFC alone,
#                          which is cheaper than ftfy), meant for OpenAI's vocabulary. Without: the standard-library port
#                          tests/simple_tokenizer.py, for our own merges files where `regex` is missing.
import gzip, html, json, os, random, re, sys, time, unicodedata


def make(folder, small, large):
    from PIL import Image, ImageDraw
    import numpy as np
    rng = np.random.default_rng(0)
    names = []
    for k, (w, h) in enumerate([(500, 375)] * small + [(1600, 1200)] * large):
        # smooth colour fields + shapes + mild noise: compresses like a photograph, not like noise or a flat image
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([
            127 + 100 * np.sin(xx / (37 + 5 * c + k % 7) + yy / (53 + 3 * c) + k) for c in range(3)
        ], axis=-1)
        base += rng.normal(0, 6, size=base.shape)
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
        name = f"img_{k:04d}_{w}x{h}.jpg"
        img.save(os.path.join(folder, name), quality=90, subsampling=2)
        names.append(name)
    print(json.dumps({"files": len(names)}))


def images(folder, repeats):
    import torch
    from PIL import Image, ImageFilter, ImageOps
    import torchvision.transforms as T
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)

    class GaussianBlur:  # SLIP's: PIL's GaussianBlur with radius ~ U(sigma)
        def __init__(self, sigma=(0.1, 2.0)):
            self.sigma = sigma

        def __call__(self, x):
            return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    class Solarize:
        def __call__(self, x):
            return ImageOps.solarize(x)

    augment = T.Compose([
        T.RandomResizedCrop(224, scale=(0.14, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur()], p=0.1),
        T.RandomApply([Solarize()], p=0.2),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".jpg"))

    def one_pass():
        start = time.perf_counter()
        checksum = 0.0
        for p in paths:
            with Image.open(p) as im:
                rgb = im.convert("RGB")
            u, v = augment(rgb), augment(rgb)
            checksum += float(u[0, 0, 0]) + float(v[0, 0, 0])
        return time.perf_counter() - start

    for p in paths[:3]:  # warm-up
        with Image.open(p) as im:
            augment(im.convert("RGB"))
    best = min(one_pass() for _ in range(repeats))
    print(json.dumps({"images": len(paths), "seconds": best, "torchvision": __import__("torchvision").__version__}))


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def clip_tokenize(tok, texts, context_length=77):
    # OpenAI's clip.tokenize(texts, truncate=True): SOT + ids + EOT, cut with EOT kept last, zero-padded
    sot_token = tok.encoder["<|startoftext|>"]
    eot_token = tok.encoder["<|endoftext|>"]
    all_tokens = [[sot_token] + tok.encode(text) + [eot_token] for text in texts]
    result = []
    for tokens in all_tokens:
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot_token
        result.append(tokens + [0] * (context_length - len(tokens)))
    return result


def tokens(merges, file, openai):
    if openai:
        import openai_simple_tokenizer as reference  # OpenAI's code verbatim (ftfy aside)

        if hasattr(reference.ftfy, "checked"):
            reference.ftfy.checked = False  # the stand-in: NFC alone, no domain checks
            baseline = "OpenAI simple_tokenizer.py (regex module; ftfy stand-in: NFC only)"
        else:
            baseline = f"OpenAI simple_tokenizer.py (regex module; ftfy {reference.ftfy.__version__})"
    else:
        import simple_tokenizer as reference  # the standard-library port the trained-merges parity test checks

        baseline = "standard-library port of simple_tokenizer.py (re, NFC)"
    with open(file, encoding="utf-8") as f:
        texts = json.load(f)
    best = float("inf")
    checksum = 0
    for _ in range(3):
        tok = reference.SimpleTokenizer(merges)  # the constructor is not timed; each pass starts with an empty cache
        start = time.perf_counter()
        rows = clip_tokenize(tok, texts)
        best = min(best, time.perf_counter() - start)
        checksum = sum(sum(r) for r in rows)
    print(json.dumps({"captions": len(texts), "seconds": best, "checksum": checksum, "baseline": baseline}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "images":
        images(sys.argv[2], int(sys.argv[3]))
    elif cmd == "tokens":
        tokens(sys.argv[2], sys.argv[3], sys.argv[4:] == ["openai"])
    else:
        raise SystemExit(f"unknown command {cmd}")
