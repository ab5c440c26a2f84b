// bench/grad_checkpointing.ts: peak memory and time of one training forward + backward with and without
// --grad-checkpointing (src/nn/checkpoint.ts), for DetailCLIP ViT-B/16 (student, teacher, decoder, text; 2 views) and
// CLIP ViT-B/16, at CPU-sized batches of random 224 px images and captions. Each case runs in a fresh process (peak RSS
// only grows within a process): it builds the model, runs one untimed step, reads VmHWM, then times `--steps` steps.
// Peak memory is reported as VmHWM and as its rise above the built model (parameters, gradients, teacher).
// Step times of separate processes see different loads from other jobs, so `--mode alternate` times the two modes in
// one process instead, alternating plain and checkpointed steps, forward and backward apart (medians of --steps each).
// Usage: deno task bench:checkpointing [--steps N] [--threads T] [--batch B] [--json]
//        (one case: --case detailclip|clip --mode plain|checkpointed|alternate, printing one JSON line)
import { parseArgs } from "node:util";
import { clipLoss, detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import { buildPreset } from "../src/models/build.ts";
import { CLIP } from "../src/models/clip.ts";
import { modelPreset } from "../src/models/configs.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { ActivationCheckpoints, withCheckpoints } from "../src/nn/checkpoint.ts";
import { manualSeed, setNumThreads, Tensor, tidy } from "../src/torch/mod.ts";

const CASES = { detailclip: "DetailCLIP_VITB16", clip: "CLIP_VITB16" } as const;
type Case = keyof typeof CASES;

/** VmHWM (peak resident set) and VmRSS of this process, in MiB. */
function memoryMiB(): { peak: number; now: number } {
  const status = Deno.readTextFileSync("/proc/self/status");
  const field = (name: string): number => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)![1]) / 1024;
  return { peak: field("VmHWM"), now: field("VmRSS") };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function runCase(name: Case, mode: string, batch: number, steps: number): Record<string, unknown> {
  const checkpointed = mode === "checkpointed";
  manualSeed(0);
  const preset = modelPreset(CASES[name]);
  const model = buildPreset(CASES[name]);
  model.train();
  const ibot = preset.kind === "detailclip"
    ? new IBOTLoss({ outDim: preset.ibot.outDim, patchOutDim: preset.ibot.patchOutDim })
    : null;
  const size = preset.vision.imageSize;
  const u = Tensor.randn([batch, 3, size, size]);
  const v = Tensor.randn([batch, 3, size, size]);
  const context = preset.text.context;
  const ids: number[] = [];
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < context; t++) ids.push(t < 10 + b ? 1 + (97 * b + 31 * t) % 40000 : t === 10 + b ? 49407 : 0);
  }
  const text = Tensor.fromArray(ids, [batch, context], { dtype: "int64" });
  let checkpoints = checkpointed ? new ActivationCheckpoints() : null;
  let forwardEnd = 0;
  const step = (): void => {
    tidy(() => {
      const loss = withCheckpoints(checkpoints, () => {
        if (model instanceof DetailCLIP) {
          const out = model.forwardTrain(u, v, text, 0.996);
          return detailClipLoss(out, { u, v }, ibot!, 0, { patchSize: preset.vision.patchSize }).loss;
        }
        const { imageEmbed, textEmbed, logitScale } = (model as CLIP).forward(u, text);
        return clipLoss({ imageU: imageEmbed, imageV: imageEmbed, text: textEmbed, logitScale }).loss;
      });
      forwardEnd = performance.now();
      if (checkpoints) checkpoints.backward(loss);
      else loss.backward();
    });
    model.zeroGrad();
  };
  if (mode === "alternate") {
    const times: Record<string, { forward: number[]; backward: number[] }> = {
      plain: { forward: [], backward: [] },
      checkpointed: { forward: [], backward: [] },
    };
    for (let i = 0; i <= steps; i++) {
      for (const which of ["plain", "checkpointed"] as const) {
        checkpoints = which === "checkpointed" ? new ActivationCheckpoints() : null;
        const start = performance.now();
        step();
        if (i === 0) continue; // warm-up
        times[which].forward.push((forwardEnd - start) / 1000);
        times[which].backward.push((performance.now() - forwardEnd) / 1000);
      }
    }
    const summary = (t: { forward: number[]; backward: number[] }) => ({
      forward_s: median(t.forward),
      backward_s: median(t.backward),
    });
    return {
      case: name,
      model: CASES[name],
      mode,
      batch,
      plain: summary(times.plain),
      checkpointed: summary(times.checkpointed),
    };
  }
  const built = memoryMiB().peak;
  step();
  const peak = memoryMiB().peak;
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    step();
    times.push((performance.now() - start) / 1000);
  }
  return {
    case: name,
    model: CASES[name],
    mode: checkpointed ? "checkpointed" : "plain",
    batch,
    built_mib: Math.round(built),
    peak_mib: Math.round(peak),
    activations_mib: Math.round(peak - built),
    step_s: times.length ? median(times) : null,
  };
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    steps: { type: "string", default: "2" },
    threads: { type: "string" },
    batch: { type: "string" },
    case: { type: "string" },
    mode: { type: "string" },
    json: { type: "boolean", default: false },
  },
});
const steps = Number(values.steps);
if (values.threads) setNumThreads(Number(values.threads));

if (values.case !== undefined) {
  const name = values.case as Case;
  if (!(name in CASES)) throw new Error(`--case ${name}: expected detailclip or clip`);
  const batch = Number(values.batch ?? (name === "detailclip" ? 2 : 4));
  console.log(JSON.stringify(runCase(name, values.mode ?? "plain", batch, steps)));
} else {
  const rows: Record<string, unknown>[] = [];
  for (const name of Object.keys(CASES) as Case[]) {
    for (const mode of ["plain", "checkpointed"]) {
      const args = ["run", "--allow-all", "--unstable-ffi", import.meta.filename!, "--case", name, "--mode", mode];
      args.push("--steps", String(steps));
      if (values.threads) args.push("--threads", values.threads);
      if (values.batch) args.push("--batch", values.batch);
      const out = new Deno.Command(Deno.execPath(), { args, stderr: "inherit" }).outputSync();
      if (!out.success) throw new Error(`bench case ${name} ${mode} failed (status ${out.code})`);
      const row = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
      rows.push(row);
      if (!values.json) {
        console.log(
          `${row.model} batch ${row.batch} ${row.mode.padEnd(12)} peak RSS ${row.peak_mib} MiB ` +
            `(model ${row.built_mib} MiB, +${row.activations_mib} MiB in the step), step ${row.step_s?.toFixed(2)} s`,
        );
      }
    }
  }
  if (values.json) console.log(JSON.stringify(rows));
}
