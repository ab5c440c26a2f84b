# ffi_baseline.py: the same 1100-op sequence as bench/ffi.ts in PyTorch eager, for the README's side-by-side.
import json
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.manual_seed(0)
x = torch.randn(8, 64)
w = torch.randn(64, 64) * 0.1
bias = torch.zeros(64)
gamma = torch.ones(64)


def sequence():
    h = x
    for _ in range(100):
        y = F.linear(h, w, bias)
        g = F.gelu(y)
        n = F.layer_norm(g, [64], gamma, bias, 1e-6)
        r = n + h
        s = F.softmax(r * 0.5, -1)
        t = s.transpose(0, 1)
        m = s @ t
        total = m.sum()
        h = r - total * 1e-3


with torch.no_grad():
    for _ in range(5):
        sequence()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        sequence()
        times.append(time.perf_counter() - start)
times.sort()
print(json.dumps({"sequence_ms": times[len(times) // 2] * 1000}))
