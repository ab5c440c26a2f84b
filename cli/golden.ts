// golden.ts: `deno task golden --ref DIR [--out DIR2]` runs one official DetailCLIP training step from golden files
// (tests/fixtures/golden/ layout: meta.json, weights/inputs safetensors) and compares every tensor it produces with DIR's
// outputs/grads/after files under the tolerances of tests/fixtures/golden/README.md. It prints the worst tensor of each file
// and exits 1 when any tolerance is exceeded. Nothing is specialised to one configuration: dims come from meta.json.
import { parseArgs } from "node:util";
import { DetailCLIP, type DetailClipOutputs } from "../src/models/detailclip.ts";
import { detailClipLoss, IBOTLoss } from "../src/losses/mod.ts";
import {
  compareTensor,
  type FileResult,
  fmt,
  type Rule,
  summarize,
  type TensorResult,
} from "../src/train/golden_compare.ts";
import { AdamW, officialParamGroups } from "../src/train/optimizer.ts";
import {
  type Device,
  loadSafeTensors,
  SafeTensorsError,
  SafeTensorsFile,
  setAllowTF32,
  type Tensor,
  tidy,
  writeSafeTensors,
} from "../src/torch/mod.ts";
import { buildGoldenModel, type GoldenMeta, readGoldenMeta } from "../src/train/golden_meta.ts";
import { OfficialCheckpointError } from "../src/checkpoint/official_checkpoint.ts";
import { PtFileError } from "../src/torch/pt_file.ts";
import { parseDevice, requireDevice } from "../src/torch/device.ts";
import { StateDictError } from "../src/nn/module.ts";
import { UsageError } from "./usage_error.ts";
import { outputOverInputProblem } from "../src/fs/same_file.ts";

const help = `usage: deno task golden --ref DIR [--out DIR2] [--device cpu|cuda|cuda:N] [--weights FILE]

Runs one official DetailCLIP training step (EMA update, teacher, masks, student, decoder, heads, text, losses,
center update, backward, AdamW with the official parameter groups, logit-scale clamp) from DIR/meta.json,
DIR/weights.safetensors and DIR/inputs.safetensors; compares with DIR/{outputs,grads,after}.safetensors where
present; writes ours to DIR2 when --out is given. --device runs the step on a CUDA device in fp32 with TF32 off
(the tolerances are fp32's). --weights takes the starting parameters from FILE instead of DIR/weights.safetensors:
safetensors, or an official DetailCLIP .pt checkpoint (module. prefix, args, optimizer). Exit status 1 when a
tolerance is exceeded.`;

export async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ref: { type: "string" },
      out: { type: "string" },
      device: { type: "string", default: "cpu" },
      weights: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  if (!values.ref) throw new UsageError("--ref DIR is required (a folder with meta.json and weights/inputs files)");
  const ref = values.ref.replace(/\/$/, "");
  let meta: GoldenMeta;
  try {
    meta = readGoldenMeta(ref);
  } catch (error) {
    throw new UsageError(`--ref: ${(error as Error).message}`);
  }
  const device = parseDevice(values.device);
  requireDevice(device);
  if (device !== "cpu") {
    setAllowTF32(false); // libtorch lets cuDNN convolutions use TF32 by default; the golden tolerances are fp32's
  }
  if (values.out) {
    // `--out` = `--ref` would replace the reference with our own numbers and then compare them with themselves.
    const inputs = ["weights", "inputs", "outputs", "grads", "after"].map((name) => ({
      flag: "--ref",
      path: `${ref}/${name}.safetensors`,
    }));
    if (values.weights !== undefined) inputs.push({ flag: "--weights", path: values.weights });
    for (const name of ["outputs", "grads", "after"]) {
      const overInput = outputOverInputProblem("--out", `${values.out}/${name}.safetensors`, inputs);
      if (overInput !== null) throw new UsageError(overInput);
    }
  }
  let produced: Produced;
  try {
    produced = runGoldenStep(ref, meta, device, values.weights);
  } catch (error) {
    const unreadable = error instanceof PtFileError || error instanceof OfficialCheckpointError ||
      error instanceof StateDictError || error instanceof SafeTensorsError;
    if (values.weights !== undefined && unreadable) throw new UsageError(`--weights: ${(error as Error).message}`);
    throw error;
  }
  try {
    if (values.out) {
      await Deno.mkdir(values.out, { recursive: true });
      writeSafeTensors(`${values.out}/outputs.safetensors`, produced.outputs);
      writeSafeTensors(`${values.out}/grads.safetensors`, produced.grads);
      writeSafeTensors(`${values.out}/after.safetensors`, produced.after);
      console.log(`wrote outputs, grads and after to ${values.out}`);
    }
    const results = compareAll(ref, produced);
    return report(results) ? 0 : 1;
  } finally {
    for (const map of [produced.outputs, produced.grads, produced.after]) for (const t of map.values()) t.dispose();
  }
}

interface Produced {
  outputs: Map<string, Tensor>;
  grads: Map<string, Tensor>;
  after: Map<string, Tensor>;
}

/** The official step, in the official order (tests/fixtures/golden/README.md "Step order"). */
function runGoldenStep(ref: string, meta: GoldenMeta, device: Device, weights?: string): Produced {
  const model = buildGoldenModel(ref, meta, weights);
  const config = model.config;
  if (device !== "cpu") model.to(device);
  const inputs = loadSafeTensors(`${ref}/inputs.safetensors`, { device });
  const need = (name: string): Tensor => {
    const t = inputs.get(name);
    if (t === undefined) throw new UsageError(`${ref}/inputs.safetensors has no tensor '${name}'`);
    return t;
  };
  const ibot = new IBOTLoss({
    outDim: config.ibot.outDim,
    patchOutDim: config.ibot.patchOutDim,
    studentTemp: meta.student_temp ?? 0.1,
    centerMomentum: meta.center_momentum ?? 0.9,
    centerMomentum2: meta.center_momentum ?? 0.9,
  });
  if (device !== "cpu") ibot.to(device);
  const optimizer = new AdamW(officialParamGroups(model.namedParameters(), meta.wd), {
    betas: meta.betas,
    eps: meta.eps,
  });
  const outputs = new Map<string, Tensor>();
  const grads = new Map<string, Tensor>();
  const after = new Map<string, Tensor>();
  try {
    tidy(() => {
      const momentum = need("momentum").item();
      const u = need("u");
      const v = need("v");
      const out = model.forwardTrain(u, v, need("text"), momentum, { fullStudentPatch: true });
      const losses = detailClipLoss(out, { u, v }, ibot, meta.epoch, { patchSize: config.vision.patchSize });
      collectOutputs(model, out, losses, ibot, outputs);
      losses.loss.backward();
      for (const [name, p] of model.namedTrainableParameters()) {
        const grad = p.grad;
        if (grad === null) throw new Error(`golden: trainable parameter ${name} received no gradient`);
        grads.set(name, grad.keep());
      }
      optimizer.step(meta.lr);
      model.clampLogitScale();
      for (const [name, p] of model.namedParameters()) after.set(name, p.detach().clone().keep());
    });
  } finally {
    for (const t of inputs.values()) t.dispose();
    optimizer.dispose();
    ibot.dispose();
    model.dispose();
  }
  if (device !== "cpu") {
    // The comparison and the safetensors writer read host memory.
    for (const map of [outputs, grads, after]) {
      for (const [name, t] of map) {
        map.set(name, t.to("cpu").keep());
        t.dispose();
      }
    }
  }
  return { outputs, grads, after };
}

function collectOutputs(
  model: DetailCLIP,
  out: DetailClipOutputs,
  losses: Record<string, Tensor>,
  ibot: IBOTLoss,
  into: Map<string, Tensor>,
): void {
  const keep = (name: string, t: Tensor): void => {
    into.set(name, t.detach().clone().keep());
  };
  keep("attn_u", out.attnU);
  keep("attn_v", out.attnV);
  keep("mask_u", out.maskU);
  keep("mask_v", out.maskV);
  keep("img_embed_u", out.imageEmbedU);
  keep("img_embed_v", out.imageEmbedV);
  keep("text_embed", out.textEmbed);
  keep("logit_scale", out.logitScale);
  keep("teacher_ibot_cls", out.teacherCls);
  keep("teacher_ibot_patch", out.teacherPatch);
  keep("student_ibot_cls", out.studentCls);
  keep("student_ibot_patch", out.studentPatch);
  keep("u_s_reconstructed", out.reconstructionU);
  keep("v_s_reconstructed", out.reconstructionV);
  keep("ibot_center_after", ibot.center);
  keep("ibot_center2_after", ibot.center2);
  for (const [name, value] of Object.entries(losses)) keep(`loss.${name}`, value);
  const teacherPrefixes = ["visual_ema.", "transformer_e.", "ibot_head_e.", "image_projection_e", "text_projection_e"];
  for (const [name, value] of model.stateDict()) {
    if (teacherPrefixes.some((p) => name.startsWith(p))) keep(`ema_after.${name}`, value);
  }
}

function compareAll(ref: string, produced: Produced): FileResult[] {
  const results: FileResult[] = [];
  const forward: Rule = { kind: "relative", rtol: 1e-4, atol: 1e-5 };
  const compareFile = (file: string, ours: Map<string, Tensor>, ruleFor: (name: string, ref: Tensor) => Rule) => {
    let reference: SafeTensorsFile;
    try {
      reference = SafeTensorsFile.open(`${ref}/${file}`);
    } catch {
      console.log(`${file}: not in ${ref}, not compared`);
      return;
    }
    const scores: TensorResult[] = [];
    const missing: string[] = [];
    try {
      for (const name of reference.names()) {
        const mine = ours.get(name);
        if (mine === undefined) {
          missing.push(name);
          continue;
        }
        const expected = reference.tensor(name);
        try {
          scores.push(compareTensor(name, mine, expected, ruleFor(name, expected)));
        } finally {
          expected.dispose();
        }
      }
    } finally {
      reference.close();
    }
    results.push(summarize(file, scores, missing));
  };
  compareFile(
    "outputs.safetensors",
    produced.outputs,
    (name) => name.startsWith("mask_") ? { kind: "exact" } : forward,
  );
  compareFile("grads.safetensors", produced.grads, () => ({ kind: "max-relative", tol: 1e-3 }));
  const gradRef = (() => {
    try {
      return SafeTensorsFile.open(`${ref}/grads.safetensors`);
    } catch {
      return null;
    }
  })();
  const gradTensors: Tensor[] = [];
  try {
    compareFile("after.safetensors", produced.after, (name) => {
      if (gradRef?.has(name)) {
        const where = gradRef.tensor(name);
        gradTensors.push(where);
        return { kind: "absolute-where", atol: 1e-5, where, threshold: 1e-6 };
      }
      return { kind: "relative", rtol: 0, atol: 1e-5 };
    });
  } finally {
    gradRef?.close();
    for (const t of gradTensors) t.dispose();
  }
  return results;
}

function report(results: FileResult[]): boolean {
  let ok = true;
  for (const r of results) {
    const passed = r.failures.length === 0 && r.missing.length === 0;
    ok &&= passed;
    const worst = r.worst
      ? `worst ${r.worst.name}: ${r.worst.detail} (score ${fmt(r.worst.score)})`
      : "nothing compared";
    console.log(`${passed ? "PASS" : "FAIL"} ${r.file}: ${r.compared} tensors; ${worst}`);
    for (const f of r.failures.slice(0, 10)) console.log(`  exceeds tolerance: ${f.name}: ${f.detail}`);
    if (r.missing.length) console.log(`  not produced: ${r.missing.slice(0, 10).join(", ")}`);
  }
  console.log(ok ? "golden: all tensors within tolerance" : "golden: tolerance exceeded");
  return ok;
}
