// bench/train_step_phases.ts: where the time of one training step goes, phase by phase, beside the same phases
// of the PyTorch eager baseline (bench/train_step_baseline.py --phases). The step is replayed here from the model's
// public pieces in DetailCLIP.forwardTrain's order (production path: student patch head at removed patches only),
// with a clock read between phases; the first step's loss is checked against the golden one, so the replay is the
// same computation. Phases: ema, teacher (both views with CLS attention), teacher_head, selection (masks and ids),
// student (encoders and CLIP image embeddings), decoder (decoders and pixel heads), student_head, text, loss
// (incl. the center update), backward, optimizer (AdamW, zero_grad, clamp), free (releasing the step's tensors).
// Ours and the baseline (served, as in train_step.ts) alternate in rounds of N steps, so both see the same load.
// Usage: deno run --allow-all --unstable-ffi bench/train_step_phases.ts --ref DIR [--steps N] [--rounds R]
//        [--threads T] [--warmup W] [--no-baseline]
import { parseArgs } from "node:util";
import { detailClipLoss } from "../src/losses/mod.ts";
import { selectTokens } from "../src/models/token_selection.ts";
import { cat, noGrad, setNumThreads, type Tensor, tidy } from "../src/torch/internal.ts";
import { Baseline, buildTrainer, median, MetaSchema, type StepParts } from "./train_step.ts";

type Laps = Map<string, number[]>;

/** One training step with a lap after each phase; returns the total loss when asked. */
function phasedStep(p: StepParts, laps: Laps, readLoss: boolean): number | null {
  const { model, ibot, optimizer, u, v, text, momentum, meta, patchSize } = p;
  let last = performance.now();
  const lap = (phase: string): void => {
    const now = performance.now();
    if (!laps.has(phase)) laps.set(phase, []);
    laps.get(phase)!.push(now - last);
    last = now;
  };
  const total = tidy(() => {
    const batch = u.size(0);
    const grid = model.gridSize;
    const teacher = noGrad(() => {
      model.updateTeacher(momentum);
      lap("ema");
      const teacherU = model.visual_ema.forwardFeatures(u, { collectClsAttention: true }); // (B, 1+L, D), (B, L)
      const teacherV = model.visual_ema.forwardFeatures(v, { collectClsAttention: true });
      lap("teacher");
      const logits = model.ibot_head_e.forward(cat([teacherU.tokens, teacherV.tokens], 0)); // (2B, 1+L, K)
      const out = {
        attnU: teacherU.clsAttention!,
        attnV: teacherV.clsAttention!,
        cls: logits.select(1, 0),
        patch: logits.slice(1, 1),
      };
      lap("teacher_head");
      return out;
    });

    const options = { gridH: grid, gridW: grid, cell: model.config.maskCell, ratio: model.config.maskRatio };
    const selectionU = selectTokens(teacher.attnU, options);
    const selectionV = selectTokens(teacher.attnV, options);
    const removedIds = (s: { idsKeep: Tensor; idsRestore: Tensor }): Tensor =>
      s.idsRestore.argsort(1, { stable: true }).slice(1, s.idsKeep.size(1)); // (B, R)
    const removed = cat([removedIds(selectionU), removedIds(selectionV)], 0); // (2B, R)
    lap("selection");

    const latentU = model.visual.forwardFeatures(u, { keep: selectionU.idsKeep }).tokens; // (B, 1+K, D)
    const latentV = model.visual.forwardFeatures(v, { keep: selectionV.idsKeep }).tokens;
    const imageEmbedU = latentU.select(1, 0).matmul(model.image_projection); // (B, E)
    const imageEmbedV = latentV.select(1, 0).matmul(model.image_projection);
    lap("student");

    const decodedU = model.forwardDecoder(latentU, selectionU.idsRestore); // (B, 1+L, D)
    const decodedV = model.forwardDecoder(latentV, selectionV.idsRestore);
    const reconstructionU = model.reconstruction_pred.forward(decodedU.slice(1, 1)); // (B, L, P·P·3)
    const reconstructionV = model.reconstruction_pred.forward(decodedV.slice(1, 1));
    lap("decoder");

    const studentCls = model.ibot_head.forward(cat([latentU.select(1, 0), latentV.select(1, 0)], 0)); // (2B, K)
    const patches = cat([decodedU.slice(1, 1), decodedV.slice(1, 1)], 0); // (2B, L, D)
    const index = removed.unsqueeze(-1).expand([2 * batch, removed.size(1), patches.size(2)]); // (2B, R, D)
    const studentPatch = model.ibot_head.forward(patches.gather(1, index)); // (2B, R, K)
    lap("student_head");

    const textEmbed = model.encodeText(text); // (B, E)
    lap("text");

    const outputs = {
      imageEmbedU,
      imageEmbedV,
      textEmbed,
      logitScale: model.logit_scale.exp(),
      teacherCls: teacher.cls,
      teacherPatch: teacher.patch,
      studentCls,
      studentPatch,
      removedIds: removed,
      reconstructionU,
      reconstructionV,
      maskU: selectionU.mask,
      maskV: selectionV.mask,
    };
    const losses = detailClipLoss(outputs, { u, v }, ibot, meta.epoch, { patchSize });
    const loss = readLoss ? losses.loss.item() : null;
    lap("loss");
    losses.loss.backward();
    lap("backward");
    optimizer.step(meta.lr);
    optimizer.zeroGrad();
    model.clampLogitScale();
    lap("optimizer");
    return loss;
  });
  lap("free");
  return total;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      ref: { type: "string" },
      steps: { type: "string" },
      threads: { type: "string" },
      warmup: { type: "string" },
      rounds: { type: "string" },
      "no-baseline": { type: "boolean" },
    },
    strict: true,
  });
  if (!values.ref) {
    console.error(
      "usage: bench/train_step_phases.ts --ref DIR [--steps N] [--rounds R] [--threads T] [--warmup W] [--no-baseline]",
    );
    return 2;
  }
  const ref = values.ref.replace(/\/$/, "");
  const steps = Number(values.steps ?? 5);
  const rounds = Number(values.rounds ?? 4);
  const threads = Number(values.threads ?? 1);
  const warmup = Number(values.warmup ?? 2);
  const meta = MetaSchema.parse(JSON.parse(Deno.readTextFileSync(`${ref}/meta.json`)));
  // As in train_step.ts: OpenBLAS's own pool follows the environment, not setNumThreads.
  if (Deno.env.get("OPENBLAS_NUM_THREADS") === undefined) Deno.env.set("OPENBLAS_NUM_THREADS", String(threads));
  setNumThreads(threads);
  const trainer = buildTrainer(ref, meta, false);
  // Every step's phase times, ours and the baseline's two variants, gathered over interleaved rounds.
  const laps: Record<"ours" | "removed" | "full", Laps> = { ours: new Map(), removed: new Map(), full: new Map() };
  const totals: Record<"ours" | "removed" | "full", number[]> = { ours: [], removed: [], full: [] };
  let baseline: Baseline | null = null;
  try {
    const first = phasedStep(trainer.parts, new Map(), true)!;
    if (Math.abs(first - meta.losses.loss) / Math.abs(meta.losses.loss) > 1e-4) {
      console.error(`phases: replayed step's loss ${first} is not the golden ${meta.losses.loss}`);
      return 1;
    }
    for (let i = 0; i < warmup; i++) phasedStep(trainer.parts, new Map(), false);
    if (!values["no-baseline"]) baseline = await Baseline.start(ref, threads, warmup);
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < steps; i++) {
        const start = performance.now();
        phasedStep(trainer.parts, laps.ours, false);
        totals.ours.push(performance.now() - start);
      }
      if (baseline === null) continue;
      for (const variant of ["removed", "full"] as const) {
        const timed = await baseline.timePhases(variant, steps);
        totals[variant].push(...timed.times);
        for (const [phase, times] of Object.entries(timed.phases)) {
          if (!laps[variant].has(phase)) laps[variant].set(phase, []);
          laps[variant].get(phase)!.push(...times);
        }
      }
    }
  } finally {
    await baseline?.close();
    trainer.dispose();
  }

  const medians = (which: "ours" | "removed" | "full"): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [phase, times] of laps[which]) out[phase] = median(times);
    if (totals[which].length > 0) out.total = median(totals[which]);
    return out;
  };
  const ours = medians("ours");
  const removed = values["no-baseline"] ? null : medians("removed");
  const full = removed === null ? null : medians("full");
  const cell = (v: number | undefined): string => (v === undefined ? "-" : v.toFixed(1)).padStart(10);
  console.log(`phase medians in ms over ${steps * rounds} steps (${rounds} interleaved rounds), ${threads} thread(s)`);
  console.log(`${"phase".padEnd(14)}${"ours".padStart(10)}${"pt-removed".padStart(12)}${"pt-full".padStart(10)}`);
  for (const phase of Object.keys(ours)) {
    console.log(`${phase.padEnd(14)}${cell(ours[phase])}  ${cell(removed?.[phase])}${cell(full?.[phase])}`);
  }
  console.log(JSON.stringify({ threads, steps, rounds, ours, pytorch_removed_only: removed, pytorch_full: full }));
  return 0;
}

if (import.meta.main) Deno.exit(await main());
