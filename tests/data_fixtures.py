# data_fixtures.py: generates the data-pipeline test fixtures (tests/data_pipeline_test.ts) into a temporary folder, and
# computes the reference outputs with PIL, the decoder and image library of the official pipeline, so our numbers are
# checked against someone else's. Nothing binary is committed: every image, tar shard and manifest is made here.
#
#   python3 data_fixtures.py make DIR          images, bad inputs, manifests, tar shards, COCO JSON; expected RGB8
#   python3 data_fixtures.py ref JOBS OUT      PIL/torchvision-equivalent transforms of the jobs (JSON) -> float32
#   python3 data_fixtures.py crops N OUT       torchvision RandomResizedCrop.get_params statistics (Python's random)
import io
import json
import math
import os
import random
import struct
import sys
import tarfile
import zlib

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


def pattern(w, h, seed):
    """A smooth gradient with some noise: compresses well, and every pixel differs from its neighbours."""
    y, x = np.mgrid[0:h, 0:w]
    r = np.random.default_rng(seed)
    a = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) * 3 + seed * 40) % 256], -1)
    a = a + r.integers(-20, 21, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w, h, depth, ctype, rows, plte=None, trns=None):
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def pack_bits(values, depth):
    """One row of sub-byte samples, most significant bits first, padded to a whole byte."""
    out, acc, used = bytearray(), 0, 0
    for v in values:
        acc = (acc << depth) | int(v)
        used += depth
        if used == 8:
            out.append(acc)
            acc, used = 0, 0
    if used:
        out.append(acc << (8 - used))
    return bytes(out)


def composite(rgb, alpha):
    return ((rgb.astype(np.int64) * alpha[..., None].astype(np.int64) + 127) // 255).astype(np.uint8)


def make(out):
    def path(*parts):
        return os.path.join(out, *parts)

    def write(name, data):
        with open(path(name), "wb") as f:
            f.write(data)

    def expect(name, array):
        np.ascontiguousarray(array, np.uint8).tofile(path(name + ".rgb"))

    os.makedirs(path("images"), exist_ok=True)
    base = pattern(67, 45, 1)
    im = Image.fromarray(base, "RGB")
    # JPEG and WebP variants: the reference is PIL's own decode.
    variants = {
        "rgb.jpg": lambda f: im.save(f, "JPEG", quality=90),
        "rgb444.jpg": lambda f: im.save(f, "JPEG", quality=90, subsampling=0),
        "prog.jpg": lambda f: im.save(f, "JPEG", quality=85, progressive=True),
        "gray.jpg": lambda f: im.convert("L").save(f, "JPEG", quality=90),
        "cmyk.jpg": lambda f: im.convert("CMYK").save(f, "JPEG", quality=90),
        "lossless.webp": lambda f: im.save(f, "WEBP", lossless=True),
        "lossy.webp": lambda f: im.save(f, "WEBP", quality=80),
        "rgb.png": lambda f: im.save(f, "PNG"),
    }
    for name, save in variants.items():
        save(path(name))
        expect(name, np.asarray(Image.open(path(name)).convert("RGB")))

    # PNG colour types written by hand (PIL cannot write most of them); the reference is computed from the samples.
    w, h = 13, 7
    y, x = np.mgrid[0:h, 0:w]
    idx = (x + 2 * y) % 16
    palette = np.array([[(i * 37) % 256, (i * 91) % 256, (255 - i * 13) % 256] for i in range(16)], np.uint8)
    trns = np.array([0, 80, 160] + [255] * 13, np.uint8)
    write("pal4.png", png_bytes(w, h, 4, 3, [pack_bits(r, 4) for r in idx], palette.tobytes(), trns[:3].tobytes()))
    expect("pal4.png", palette[idx])
    expect("pal4.png.black", composite(palette[idx], trns[idx]))
    g2 = (x + y) % 4
    write("gray2.png", png_bytes(w, h, 2, 0, [pack_bits(r, 2) for r in g2]))
    expect("gray2.png", np.repeat((g2 * 85)[..., None], 3, -1))
    g16 = ((x * 5003 + y * 7919) % 65536).astype(np.uint16)
    write("gray16.png", png_bytes(w, h, 16, 0, [r.astype(">u2").tobytes() for r in g16]))
    expect("gray16.png", np.repeat((g16 >> 8)[..., None], 3, -1))
    c16 = np.stack([(x * 4001 + 7) % 65536, (y * 9001 + 3) % 65536, ((x + y) * 2503) % 65536], -1).astype(np.uint16)
    write("rgb16.png", png_bytes(w, h, 16, 2, [r.astype(">u2").tobytes() for r in c16]))
    expect("rgb16.png", c16 >> 8)
    rgb8 = pattern(w, h, 2)
    a8 = ((x * 19 + y * 37) % 256).astype(np.uint8)
    rgba8 = np.concatenate([rgb8, a8[..., None]], -1)
    write("rgba8.png", png_bytes(w, h, 8, 6, [r.tobytes() for r in rgba8]))
    expect("rgba8.png", rgb8)
    expect("rgba8.png.black", composite(rgb8, a8))
    la = np.stack([rgb8[..., 0], a8], -1)
    write("la8.png", png_bytes(w, h, 8, 4, [r.tobytes() for r in la]))
    expect("la8.png", np.repeat(rgb8[..., :1], 3, -1))
    expect("la8.png.black", composite(np.repeat(rgb8[..., :1], 3, -1), a8))
    rgba16 = np.concatenate([c16, (a8.astype(np.uint16) * 257 + 1)[..., None]], -1).astype(np.uint16)
    write("rgba16.png", png_bytes(w, h, 16, 6, [r.astype(">u2").tobytes() for r in rgba16]))
    expect("rgba16.png", c16 >> 8)
    expect("rgba16.png.black", composite((c16 >> 8).astype(np.uint8), (rgba16[..., 3] >> 8).astype(np.uint8)))

    # Bad inputs.
    jpg = open(path("rgb.jpg"), "rb").read()
    png = open(path("rgb.png"), "rb").read()
    webp = open(path("lossy.webp"), "rb").read()
    write("empty.jpg", b"")
    write("trunc.jpg", jpg[: len(jpg) // 2])
    # Flipped entropy-coded bytes often still decode (to wrong pixels, silently, in PIL too), so the corruption is in
    # a Huffman table: 16 code counts of 255 cannot describe a valid code.
    dht = jpg.index(b"\xff\xc4") + 5
    write("corrupt.jpg", jpg[:dht] + b"\xff" * 16 + jpg[dht + 16 :])
    write("trunc.png", png[: len(png) // 2])
    idat = png.index(b"IDAT") + 4
    write("corrupt.png", png[: idat + 10] + bytes([png[idat + 10] ^ 0x55]) + png[idat + 11 :])
    write("trunc.webp", webp[: len(webp) // 2])
    write("text.jpg", b"<html>404 not found</html>\n")
    im.save(path("anim.gif"), "GIF")
    # Decompression bombs: headers that promise 30000 x 30000 (PNG) and 60000 x 60000 (JPEG) pixels.
    write("bomb.png", png_bytes(30000, 30000, 8, 0, [b"\x00" * 16]))
    sof = jpg.index(b"\xff\xc0")
    write("bomb.jpg", jpg[: sof + 5] + struct.pack(">HH", 60000, 60000) + jpg[sof + 9 :])
    os.makedirs(path("dir.jpg"), exist_ok=True)

    # A small dataset of valid images, alternating PNG and JPEG, of several sizes and aspect ratios.
    captions = []
    for k in range(12):
        a = pattern(40 + 7 * k, 30 + 5 * ((k * 7) % 12), 10 + k)
        name = f"images/img_{k:02d}." + ("png" if k % 2 == 0 else "jpg")
        Image.fromarray(a, "RGB").save(path(name), quality=92)
        captions.append(f"a photo of pattern number {k}")
    # Extreme aspect ratios: eval resizes the shorter side to S, so the longer one grows a lot (the sliver to millions
    # of rows, which only the center crop may ever materialise).
    Image.fromarray(pattern(3, 500, 5), "RGB").save(path("tall.png"))
    Image.fromarray(pattern(1, 20000, 6), "RGB").save(path("sliver.png"))
    # A large JPEG for DCT scaling.
    Image.fromarray(pattern(1600, 1200, 99), "RGB").save(path("big.jpg"), quality=90)

    # CSV: quotes, commas, newlines, CRLF, a short row, an empty caption, invalid UTF-8, an absolute path.
    rows = [
        b"filepath,title,extra\r\n",
        b'images/img_00.png,"a caption, with a comma",x\n',
        b'images/img_01.jpg,"she said ""hi""",y\r\n',
        b'images/img_02.png,"line one\nline two",z\n',
        b"images/img_03.jpg\n",
        b"images/img_04.png,,w\n",
        b"images/img_05.jpg,bad \xff\xfe utf8,v\n",
        (path("images", "img_06.png") + ",absolute path,u\n").encode(),
        b"images/img_07.jpg,plain caption,t",
    ]
    write("manifest.csv", b"".join(rows))
    os.makedirs(path("tsvroot"), exist_ok=True)
    names = [f"img_{k:02d}.{'png' if k % 2 == 0 else 'jpg'}" for k in range(12)]
    tsv = "image\tcaption\n" + "".join(f"{names[k]}\t{captions[k]}\n" for k in range(12))
    write("tsvroot/manifest.tsv", tsv.encode())
    # The same 12 images, for the determinism tests.
    write("all.csv", ("filepath,title\n" + "".join(
        f"images/img_{k:02d}.{'png' if k % 2 == 0 else 'jpg'},{captions[k]}\n" for k in range(12))).encode())
    # Good images mixed with every kind of bad file.
    bad = ["empty.jpg", "trunc.jpg", "corrupt.jpg", "trunc.png", "corrupt.png", "trunc.webp", "text.jpg", "anim.gif",
           "bomb.png", "bomb.jpg", "dir.jpg", "missing.jpg"]
    mixed = [f"images/img_{k:02d}.{'png' if k % 2 == 0 else 'jpg'},good {k}" for k in range(12)]
    mixed += [f"{name},bad {name}" for name in bad]
    write("mixed.csv", ("filepath,title\n" + "\n".join(mixed) + "\n").encode())

    # webdataset shards (img2dataset layout), see the test for what each one exercises.
    def shard(name, members, cut_member=None):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for member_name, data in members:
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                info.mtime = 0
                tf.addfile(info, io.BytesIO(data))
        data = buf.getvalue()
        if cut_member is not None:
            with tarfile.open(fileobj=io.BytesIO(data)) as tf:
                data = data[: tf.getmembers()[cut_member].offset_data + 10]
        write(name, data)

    def img(k, fmt="JPEG"):
        b = io.BytesIO()
        Image.fromarray(pattern(48 + k, 40, 50 + k), "RGB").save(b, fmt, quality=90)
        return b.getvalue()

    def key(k):
        return f"{k:09d}"

    shard("shard-000.tar", [
        m for k in range(3) for m in [(f"{key(k)}.jpg", img(k)), (f"{key(k)}.txt", f"caption {k}".encode())]
    ] + [(f"{key(3)}.png", img(3, "PNG")),
         (f"{key(3)}.json", json.dumps({"caption": "caption 3", "url": "x"}).encode())])
    shard("shard-001.tar", [
        (f"{key(4)}.jpg", img(4)), (f"{key(4)}.txt", b"caption 4"),
        (f"{key(5)}.jpg", img(5)),
        (f"{key(6)}.txt", b"caption 6 without an image"),
        (f"{key(7)}.jpg", img(7)), (f"{key(7)}.txt", b"bad \xff utf8"),
        (f"{key(8)}.jpg", img(8)), (f"{key(8)}.txt", b"   "),
        (f"{key(9)}.webp", img(9, "WEBP")), (f"{key(9)}.txt", b"caption 9"),
    ])
    shard("shard-002.tar", [
        m for k in (10, 11, 12) for m in [(f"{key(k)}.jpg", img(k)), (f"{key(k)}.txt", f"caption {k}".encode())]
    ], cut_member=4)
    for k in range(13):
        write(f"wds_{k}.bin", img(k, "PNG" if k == 3 else "WEBP" if k == 9 else "JPEG"))

    # COCO captions.
    os.makedirs(path("coco", "train2017"), exist_ok=True)
    for image_id in (1, 2):
        Image.fromarray(pattern(50, 40, image_id), "RGB").save(path("coco", "train2017", f"{image_id:012d}.jpg"))
    write("coco/captions.json", json.dumps({"annotations": [
        {"image_id": 1, "id": 10, "caption": "a single caption"},
        {"image_id": 2, "id": 11, "caption": "first of two"},
        {"image_id": 2, "id": 12, "caption": "second of two"},
        {"image_id": 3, "id": 13, "caption": "   "},
        {"image_id": "x", "id": 14, "caption": "bad id"},
        {"image_id": 4, "id": 15, "caption": "its image file is missing"},
    ]}).encode())


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize(im):
    a = np.asarray(im.convert("RGB"), np.uint8).astype(np.float32) / np.float32(255)
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def adjust_hue(img, factor):
    """torchvision.transforms.functional_pil.adjust_hue."""
    h, s, v = img.convert("HSV").split()
    np_h = np.array(h, dtype=np.uint8)
    with np.errstate(over="ignore"):
        np_h += np.uint8(factor * 255)
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")


def reference(jobs_path, out_path):
    """Each job: train (crop box + a list of ops at fixed parameters) or eval (Resize + CenterCrop), as torchvision
    applies them to a PIL image."""
    outputs = []
    for job in json.load(open(jobs_path)):
        im = Image.open(job["path"]).convert("RGB")
        size = job["size"]
        if job["kind"] == "train":
            top, left, height, width = job["box"]
            im = im.crop((left, top, left + width, top + height)).resize((size, size), Image.BICUBIC)
            for op, arg in job["ops"]:
                if op == "brightness":
                    im = ImageEnhance.Brightness(im).enhance(arg)
                elif op == "contrast":
                    im = ImageEnhance.Contrast(im).enhance(arg)
                elif op == "saturation":
                    im = ImageEnhance.Color(im).enhance(arg)
                elif op == "hue":
                    im = adjust_hue(im, arg)
                elif op == "gray":
                    im = im.convert("L").convert("RGB")
                elif op == "blur":
                    im = im.filter(ImageFilter.GaussianBlur(radius=arg))
                elif op == "solarize":
                    im = ImageOps.solarize(im, threshold=arg)
        else:
            w, h = im.size
            # torchvision Resize(size) on the shorter side, then CenterCrop (Python's round: half to even).
            if w <= h:
                nw, nh = size, int(size * h / w)
            else:
                nw, nh = int(size * w / h), size
            im = im.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
        outputs.append(normalize(im).reshape(-1))
    np.concatenate(outputs).astype("<f4").tofile(out_path)


def get_params(width, height, scale, ratio, rnd):
    """torchvision RandomResizedCrop.get_params with Python's random instead of torch's generator."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for attempt in range(10):
        target_area = area * rnd.uniform(scale[0], scale[1])
        aspect_ratio = math.exp(rnd.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = rnd.randint(0, height - h)
            j = rnd.randint(0, width - w)
            return i, j, h, w, attempt + 1
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w, 0


def crops(count, out_path):
    """Mean area fraction, mean log aspect, fallback rate and mean attempts per size, for the statistics test."""
    rnd = random.Random(1234)
    result = {}
    for width, height in [(67, 45), (224, 224), (300, 40), (40, 300), (1000, 12)]:
        boxes = [get_params(width, height, (0.14, 1.0), (3 / 4, 4 / 3), rnd) for _ in range(count)]
        result[f"{width}x{height}"] = {
            "area": float(np.mean([b[2] * b[3] / (width * height) for b in boxes])),
            "log_aspect": float(np.mean([math.log(b[3] / b[2]) for b in boxes])),
            "fallback": float(np.mean([b[4] == 0 for b in boxes])),
            "attempts": float(np.mean([b[4] for b in boxes if b[4] > 0] or [0])),
        }
    json.dump(result, open(out_path, "w"))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "make":
        make(sys.argv[2])
    elif command == "ref":
        reference(sys.argv[2], sys.argv[3])
    elif command == "crops":
        crops(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(f"unknown command {command}")
