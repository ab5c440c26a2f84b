// bench/device_step.ts: the ViT-B/16 DetailCLIP training step on a CUDA device (bench/device.sh runs it beside
// bench/device_step_baseline.py, the same step in PyTorch eager, on the same card). The production step: EMA update,
// teacher with the fused CLS-attention kernel, token selection kernel, student, decoder, heads (student patch head
// at the removed patches, docs/parity.md#student-patch-head-at-removed-positions), text, losses, backward, AdamW
// (official groups), clamp, zero_grad; bf16 autocast by default. Random images and token ids (the arithmetic, not the
// data, sets the time). Prints one JSON line: ms per step (median of --steps after --warmup, each step synchronised),
// images/s, peak allocated bytes and MFU from the 241 GFLOPs (docs/model.md#flops) per sample against --peak-tflops
// (H100/H200 SXM bf16 dense: 989).
// Usage: deno run -A --unstable-ffi bench/device_step.ts --batch N [--steps S] [--warmup W] [--precision bf16|fp32]
//        [--peak-tflops P] [--device cuda]
import { parseArgs } from "node:util";
import { detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import { type DetailClipConfig, modelPreset } from "../src/models/configs.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import {
  autocast,
  cudaIsAvailable,
  type Device,
  kernelsCompiled,
  manualSeed,
  maxMemoryAllocated,
  resetPeakMemoryStats,
  synchronize,
  Tensor,
  tidy,
  torchVersion,
} from "../src/torch/mod.ts";
import { AdamW, officialParamGroups } from "../src/train/optimizer.ts";

const FLOPS_PER_SAMPLE = 240.7e9; // docs/model.md#flops: teacher fwd + 3x the trainable path's forward

function main(): number {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      batch: { type: "string", default: "128" },
      steps: { type: "string", default: "20" },
      warmup: { type: "string", default: "5" },
      precision: { type: "string", default: "bf16" },
      "peak-tflops": { type: "string", default: "989" },
      device: { type: "string", default: "cuda" },
    },
    strict: true,
  });
  const batch = Number(values.batch), steps = Number(values.steps), warmup = Number(values.warmup);
  const device = values.device as Device;
  if (!cudaIsAvailable()) {
    console.error("bench/device_step.ts: this libtorch has no usable CUDA device");
    return 2;
  }
  manualSeed(0);
  const config = modelPreset("DetailCLIP_VITB16") as DetailClipConfig;
  const model = new DetailCLIP(config);
  model.train();
  model.to(device);
  const ibot = new IBOTLoss({
    outDim: config.ibot.outDim,
    patchOutDim: config.ibot.patchOutDim,
    studentTemp: 0.1,
    centerMomentum: 0.9,
    centerMomentum2: 0.9,
  });
  ibot.to(device);
  const optimizer = new AdamW(officialParamGroups(model.namedParameters(), 0.5), { betas: [0.9, 0.98], eps: 1e-8 });
  const size = config.vision.imageSize;
  const u = Tensor.randn([batch, 3, size, size], { device }).keep();
  const v = Tensor.randn([batch, 3, size, size], { device }).keep();
  const text = Tensor.randint(0, config.text.vocab, [batch, config.text.context], device).keep();

  const step = (): void => {
    tidy(() => {
      const run = (): Tensor => {
        const out = model.forwardTrain(u, v, text, 0.999);
        return detailClipLoss(out, { u, v }, ibot, 0, { patchSize: config.vision.patchSize }).loss;
      };
      const loss = values.precision === "fp32" ? run() : autocast("cuda", "bfloat16", run);
      loss.backward();
    });
    optimizer.step(5e-4);
    model.clampLogitScale();
    optimizer.zeroGrad();
  };

  for (let i = 0; i < warmup; i++) step();
  synchronize(device);
  resetPeakMemoryStats(device);
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    step();
    synchronize(device);
    times.push(performance.now() - start);
  }
  const sorted = [...times].sort((a, b) => a - b);
  const ms = sorted[Math.floor(sorted.length / 2)];
  const imagesPerSecond = batch / (ms / 1000);
  const peakTflops = Number(values["peak-tflops"]);
  console.log(JSON.stringify({
    impl: "detailclip (Deno + libdetailclip)",
    torch: torchVersion(),
    kernels: kernelsCompiled(),
    batch,
    precision: values.precision,
    steps,
    warmup,
    ms_per_step: ms,
    ms_min: sorted[0],
    images_per_s: imagesPerSecond,
    peak_memory_bytes: maxMemoryAllocated(device),
    tflops: (FLOPS_PER_SAMPLE * imagesPerSecond) / 1e12,
    mfu: (FLOPS_PER_SAMPLE * imagesPerSecond) / (peakTflops * 1e12),
    peak_tflops: peakTflops,
  }));
  return 0;
}

if (import.meta.main) Deno.exit(main());
