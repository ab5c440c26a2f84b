// openclip_test.ts: OpenAI/OpenCLIP weights against open_clip itself. tests/openclip_fixtures.py builds models in
// open_clip 3.3.0 (random weights, perturbed so no LayerNorm is the identity), saves them the ways users get them
// (safetensors, an open_clip_train checkpoint with `state_dict` and `module.`, a TorchScript archive as OpenAI ships)
// and records encode_image/encode_text on fixed inputs; here the files are loaded and the L2-normalised embeddings must
// agree within 1e-4. Needs open_clip in .tools/openclip-pylib (tools/setup.sh installs it): otherwise the comparisons
// are ignored with the reason (a failing test under DETAILCLIP_REQUIRE_TOOLS=1). The refusal of a hostile pickle needs
// only Debian's python3-torch.
import { existsSync } from "node:fs";
import { ClipWeightsError, isOpenClipWeights, loadOpenClip } from "../src/checkpoint/clip_weights.ts";
import { buildPreset } from "../src/models/build.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { inferOpenClipConfig, openClipPreset } from "../src/models/openclip_configs.ts";
import { OptionError } from "../src/train/options.ts";
import { initFromPretrained, pretrainedKeyMap } from "../src/train/pretrained.ts";
import { F, liveTensors, noGrad, type Tensor, tidy } from "../src/torch/mod.ts";
import { SafeTensorsFile, writeSafeTensors } from "../src/torch/io.ts";
import { assert, assertEquals, assertThrows, missingTool, pythonModulesMissing } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const FIXTURES = new URL("./openclip_fixtures.py", import.meta.url).pathname;
const OFFICIAL_FIXTURES = new URL("./official_fixtures.py", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const OPENCLIP_PYLIB = `${ROOT}.tools/openclip-pylib`;

function openClipEnv(): Record<string, string> {
  const inherited = Deno.env.get("PYTHONPATH");
  return { PYTHONPATH: [OPENCLIP_PYLIB, `${ROOT}.tools/pylib`, ...(inherited ? [inherited] : [])].join(":") };
}

function openClipMissing(): string | null {
  if (!existsSync(`${OPENCLIP_PYLIB}/open_clip`)) {
    return `.tools/openclip-pylib/open_clip is missing (tools/setup.sh installs open_clip 3.3.0 there)`;
  }
  const result = new Deno.Command(PYTHON, {
    args: ["-c", "import open_clip, safetensors; assert open_clip.__version__ == '3.3.0', open_clip.__version__"],
    env: openClipEnv(),
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  if (result.success) return null;
  const last = new TextDecoder().decode(result.stderr).trim().split("\n").pop();
  return `${PYTHON} cannot use open_clip 3.3.0 from .tools/openclip-pylib (${last})`;
}

const noOpenClip = missingTool("open_clip 3.3.0", openClipMissing());
const noTorch = missingTool("python3-torch", pythonModulesMissing(["torch"]));

function fixtures(command: string, dir: string): void {
  const out = new Deno.Command(PYTHON, {
    args: [FIXTURES, command, dir],
    env: openClipEnv(),
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success && text.includes("ok"), `openclip_fixtures.py ${command} failed:\n${text}`);
}

/** Max |a - b| over two tensors of one shape. */
function maxAbsDiff(a: Tensor, b: Tensor): number {
  assertEquals(a.shape, b.shape, "shapes");
  return tidy(() => a.sub(b).abs().amax().item());
}

/** Loads `weights` with `options` and compares both towers' normalised embeddings with open_clip's (`io`). */
function compare(
  weights: string,
  io: string,
  options: Parameters<typeof loadOpenClip>[1],
  label: string,
): { image: number; text: number } {
  const before = liveTensors();
  const { model, architecture, format } = loadOpenClip(weights, options);
  using file = SafeTensorsFile.open(io);
  const inputs = file.tensors();
  try {
    const diffs = noGrad(() =>
      tidy(() => {
        const images = F.normalize(model.encodeImage(inputs.get("images")!), { dim: -1 });
        const texts = F.normalize(model.encodeText(inputs.get("tokens")!), { dim: -1 });
        assertEquals(model.logit_scale.item(), inputs.get("logit_scale")!.item(), `${label} logit_scale`);
        return {
          image: maxAbsDiff(images, inputs.get("image_embeds")!),
          text: maxAbsDiff(texts, inputs.get("text_embeds")!),
        };
      })
    );
    console.log(`${label} (${format}; ${architecture}): image max abs diff ${diffs.image}, text ${diffs.text}`);
    return diffs;
  } finally {
    for (const t of inputs.values()) t.dispose();
    model.dispose();
    assertEquals(liveTensors(), before, `${label}: live tensors after load + encode`);
  }
}

Deno.test({
  name: "open_clip ViT-B-32 (GELU) from safetensors: embeddings equal encode_image/encode_text within 1e-4",
  ignore: noOpenClip,
  fn: () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_openclip_b32_" });
    try {
      fixtures("vitb32", dir);
      assert(isOpenClipWeights(`${dir}/vitb32.safetensors`), "the safetensors file is not recognised as OpenCLIP");
      // Inferred from the shapes: ViT-B-32 with GELU, what open_clip built.
      const inferred = compare(`${dir}/vitb32.safetensors`, `${dir}/vitb32_io.safetensors`, {}, "ViT-B-32 inferred");
      assert(inferred.image <= 1e-4 && inferred.text <= 1e-4, `ViT-B-32: ${JSON.stringify(inferred)} > 1e-4`);
      // By name, and the name's architecture is the one the shapes gave.
      const named = compare(`${dir}/vitb32.safetensors`, `${dir}/vitb32_io.safetensors`, {
        model: "ViT-B-32",
      }, "ViT-B-32 --model");
      assert(named.image <= 1e-4 && named.text <= 1e-4, `ViT-B-32 --model: ${JSON.stringify(named)} > 1e-4`);
      // A preset whose shapes differ is refused, naming the key and both shapes.
      assertThrows(() => loadOpenClip(`${dir}/vitb32.safetensors`, { model: "ViT-B-16" }), ClipWeightsError, [
        "do not fit model 'ViT-B-16'",
        "visual.conv1.weight is [768, 3, 32, 32] in the file but [768, 3, 16, 16] in the model",
      ]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "open_clip QuickGELU CLIP: a train checkpoint (.pt, state_dict + module.) and a TorchScript archive match",
  ignore: noOpenClip,
  fn: () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_openclip_quickgelu_" });
    try {
      fixtures("small_quickgelu", dir);
      const io = `${dir}/small_io.safetensors`;
      const pt = compare(`${dir}/small.pt`, io, { quickGelu: true }, "small .pt");
      assert(pt.image <= 1e-4 && pt.text <= 1e-4, `small .pt: ${JSON.stringify(pt)} > 1e-4`);
      // OpenAI's container: QuickGELU is assumed for a TorchScript archive, nothing else is needed.
      const jit = compare(`${dir}/small_jit.pt`, io, {}, "small TorchScript");
      assert(jit.image <= 1e-4 && jit.text <= 1e-4, `small TorchScript: ${JSON.stringify(jit)} > 1e-4`);
      // The comparison sees the activation: the same weights with GELU are off by far more than the tolerance.
      const gelu = compare(`${dir}/small.pt`, io, { quickGelu: false }, "small .pt as GELU");
      assert(
        gelu.image > 1e-3 && gelu.text > 1e-3,
        `GELU instead of QuickGELU went unnoticed: ${JSON.stringify(gelu)}`,
      );

      // A missing tensor is an error that names it.
      const { model } = loadOpenClip(`${dir}/small_jit.pt`);
      try {
        const state = new Map(model.stateDict());
        state.delete("visual.ln_post.weight");
        writeSafeTensors(`${dir}/missing.safetensors`, state);
      } finally {
        model.dispose();
      }
      assertThrows(() => loadOpenClip(`${dir}/missing.safetensors`), ClipWeightsError, [
        "1 missing: visual.ln_post.weight",
      ]);
      // The shapes alone give the architecture of the custom model (heads at open_clip's head width 64).
      const config = loadOpenClip(`${dir}/small_jit.pt`);
      try {
        assertEquals(config.model.config.vision, {
          imageSize: 64,
          patchSize: 16,
          width: 128,
          layers: 2,
          heads: 2,
          mlpWidth: 512,
        });
        assertEquals(config.model.config.quickGelu, true);
      } finally {
        config.model.dispose();
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("OpenAI/OpenCLIP presets: the released shapes, read back from shapes alone, and a missing key named", () => {
  const b32 = openClipPreset("ViT-B/32");
  assertEquals([b32.quickGelu, b32.vision.patchSize, b32.vision.width, b32.text.width, b32.embedDim], [
    true,
    32,
    768,
    512,
    512,
  ]);
  const l14 = openClipPreset("ViT-L-14");
  assertEquals([l14.quickGelu, l14.vision.heads, l14.vision.layers, l14.text.heads, l14.embedDim], [
    false,
    16,
    24,
    12,
    768,
  ]);
  assertEquals(openClipPreset("ViT-H-14").vision.heads, 16); // head width 80, which the shapes cannot tell
  // Read off shapes, a ViT-B/16 is named as such (not as the ViT-B-32 with the same widths).
  const shapesOf = (name: string): Map<string, number[]> => {
    const c = openClipPreset(name);
    const v = c.vision, t = c.text;
    const shapes = new Map<string, number[]>([
      ["visual.conv1.weight", [v.width, 3, v.patchSize, v.patchSize]],
      ["visual.positional_embedding", [1 + (v.imageSize / v.patchSize) ** 2, v.width]],
      ["ln_final.weight", [t.width]],
      ["text_projection", [t.width, c.embedDim]],
      ["positional_embedding", [t.context, t.width]],
      ["token_embedding.weight", [t.vocab, t.width]],
    ]);
    for (let i = 0; i < v.layers; i++) shapes.set(`visual.transformer.resblocks.${i}.ln_1.weight`, [v.width]);
    for (let i = 0; i < t.layers; i++) shapes.set(`transformer.resblocks.${i}.ln_1.weight`, [t.width]);
    shapes.set("visual.transformer.resblocks.0.mlp.c_fc.weight", [v.mlpWidth, v.width]);
    shapes.set("transformer.resblocks.0.mlp.c_fc.weight", [t.mlpWidth, t.width]);
    return shapes;
  };
  for (const name of ["ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-L-14-336", "ViT-H-14"]) {
    assertEquals(inferOpenClipConfig(shapesOf(name), { quickGelu: false }), openClipPreset(name), `${name} inferred`);
  }
  assertEquals(inferOpenClipConfig(shapesOf("ViT-B/16"), { quickGelu: true }).name, "ViT-B-16-quickgelu");
  assertThrows(() => openClipPreset("ViT-X-99"), Error, ["unknown OpenAI/OpenCLIP model 'ViT-X-99'", "ViT-B-16"]);
  assertThrows(
    () => inferOpenClipConfig(new Map([["visual.conv1.weight", [768, 3, 32, 32]]]), { quickGelu: false }),
    Error,
    ["'visual.positional_embedding' is missing"],
  );
});

Deno.test({
  name: "a .pt whose pickle would call os.system is refused with one line, and nothing runs",
  ignore: noTorch,
  fn: () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_openclip_hostile_" });
    try {
      const marker = `${dir}/pwned`;
      const out = new Deno.Command(PYTHON, {
        args: [OFFICIAL_FIXTURES, "hostile", `${dir}/hostile.pt`, marker],
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      assert(out.success, new TextDecoder().decode(out.stderr));
      const error = assertThrows(() => loadOpenClip(`${dir}/hostile.pt`), ClipWeightsError, [
        `${dir}/hostile.pt`,
        "refusing pickle opcode",
        "posix.system",
      ]);
      assert(!error.message.includes("\n"), `not one line: ${error.message}`);
      assert(!isOpenClipWeights(`${dir}/hostile.pt`), "a hostile file was taken for OpenCLIP weights");
      // Through the CLI as a user runs it: one line, the checkpoint status, nothing written, nothing run.
      for (const command of [["embed", "--text", "a cat", "--out", `${dir}/e.safetensors`], ["eval", "zeroshot"]]) {
        const run = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-all",
            "--unstable-ffi",
            new URL("../cli/main.ts", import.meta.url).pathname,
            ...command,
            "--checkpoint",
            `${dir}/hostile.pt`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).outputSync();
        const stderr = new TextDecoder().decode(run.stderr).trim();
        assertEquals(run.code, 6, `${command[0]}: ${stderr}`);
        assert(!stderr.includes("\n") && stderr.startsWith(`detailclip ${command[0]}: `), stderr);
        assert(stderr.includes("hostile.pt"), stderr);
      }
      assert(!existsSync(`${dir}/e.safetensors`), "embed wrote an output");
      assert(!existsSync(marker), "the hostile pickle's command ran");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "train --pretrained: the text tower maps exactly (open_clip's encode_text), the ViT where shapes fit, EMA copies",
  ignore: noOpenClip,
  fn: () => {
    const before = liveTensors();
    const dir = Deno.makeTempDirSync({ prefix: "dc_openclip_pretrained_" });
    try {
      fixtures("tiny_synthetic", dir);
      const weights = `${dir}/tiny.safetensors`;
      for (const preset of ["CLIP_tiny_synthetic", "tiny_synthetic"]) {
        const model = buildPreset(preset);
        try {
          const line = initFromPretrained(model, weights);
          console.log(`${preset}: ${line}`);
          assert(line.includes("visual.ln_pre has no place in our ViT"), line);
          assert(!line.includes("kept their init"), `every mapped tensor fits: ${line}`);
          // Every mapped tensor equals the file's (up to the leading 1s of cls_token/pos_embed).
          using file = SafeTensorsFile.open(weights);
          const own = model.stateDict();
          let checked = 0;
          for (const [ours, theirs] of pretrainedKeyMap(model)) {
            tidy(() => {
              const source = file.tensor(theirs);
              assertEquals(maxAbsDiff(own.get(ours)!.reshape(source.shape), source), 0, `${ours} <- ${theirs}`);
            });
            checked++;
          }
          assertEquals(checked, 4 + 2 + 2 * 12 + 3 + 2 * 12 + 3, "mapped tensors");
          assertEquals(tidy(() => model.visual.patch_embed.proj.bias!.abs().sum().item()), 0, "patch conv bias");
          // OpenAI's text tower is ours: with QuickGELU weights the text embeddings are open_clip's.
          using io = SafeTensorsFile.open(`${dir}/tiny_io.safetensors`);
          const diff = tidy(() =>
            maxAbsDiff(
              F.normalize(noGrad(() => model.encodeText(io.tensor("tokens"))), { dim: -1 }),
              io.tensor("text_embeds"),
            )
          );
          console.log(`${preset}: text embeddings vs open_clip: max abs diff ${diff}`);
          assert(diff <= 1e-4, `text tower after --pretrained differs from open_clip's by ${diff}`);
          if (model instanceof DetailCLIP) {
            const { teacher, student } = model.emaPairs();
            teacher.forEach((t, i) => assertEquals(tidy(() => maxAbsDiff(t, student[i])), 0, `EMA tensor ${i}`));
          }
        } finally {
          model.dispose();
        }
      }
      // Not OpenAI/OpenCLIP weights: a clear option error.
      const ours = buildPreset("CLIP_tiny_synthetic");
      try {
        writeSafeTensors(`${dir}/ours.safetensors`, ours.stateDict());
        assertThrows(() => initFromPretrained(ours, `${dir}/ours.safetensors`), OptionError, [
          "not OpenAI/OpenCLIP ViT CLIP weights",
          "--resume",
        ]);
      } finally {
        ours.dispose();
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    assertEquals(liveTensors(), before, "live tensors after --pretrained");
  },
});
