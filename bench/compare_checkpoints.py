"""compare_checkpoints.py: how far apart the model weights of two training checkpoints are (bench/device.sh compares
an uninterrupted CUDA run with one resumed from its middle checkpoint). Reads the safetensors layout directly (no
packages), compares every `model.*` float32 tensor, and prints one JSON line: bitwise (all bytes equal), the largest
absolute difference and the tensor it is in. Other dtypes are compared byte for byte.
Usage: python3 bench/compare_checkpoints.py A.safetensors B.safetensors
"""
import array
import json
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    header.pop("__metadata__", None)
    return {name: (info["dtype"], data[info["data_offsets"][0]:info["data_offsets"][1]])
            for name, info in header.items() if name.startswith("model.")}


def main(a_path, b_path):
    a, b = tensors(a_path), tensors(b_path)
    if sorted(a) != sorted(b):
        print(json.dumps(dict(bitwise=False, error="different tensor names")))
        return 1
    worst, where, bitwise = 0.0, None, True
    for name in sorted(a):
        (dtype, x), (_, y) = a[name], b[name]
        if x == y:
            continue
        bitwise = False
        if dtype == "F32" and len(x) == len(y):
            diff = max(abs(p - q) for p, q in zip(array.array("f", x), array.array("f", y)))
        else:
            diff = float("inf")
        if diff > worst:
            worst, where = diff, name
    print(json.dumps(dict(bitwise=bitwise, max_abs_diff=worst, worst_tensor=where, tensors=len(a))))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
