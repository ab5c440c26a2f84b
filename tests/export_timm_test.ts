// export_timm_test.ts: the exported backbone (deno task export backbone) as timm 1.0 sees it. tests/export_check.py
// loads the file strictly into timm's VisionTransformer and runs forward_features on the same images our tower saw;
// the tokens after the final norm must agree within 1e-4. Every parameter is perturbed first, so the zero biases and
// unit LayerNorm weights of a fresh init cannot hide a wrong key mapping, and the teacher differs from the student.
// Without timm in .tools/pylib (tools/setup.sh installs it when the local package index has it) the forward part is
// skipped with a warning (a failing test with DETAILCLIP_REQUIRE_TOOLS=1); the keys, shapes and strict load are still
// checked against the timm-style module.
import { runExport } from "../cli/export.ts";
import { buildPreset } from "../src/models/build.ts";
import { DetailCLIP } from "../src/models/detailclip.ts";
import { liveTensors, noGrad, Tensor, tidy, writeSafeTensors } from "../src/torch/mod.ts";
import { saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { assert, assertEquals, missingTool, PYLIB_DIR, pylibEnv, quietly, timmInstalled } from "./helpers.ts";

const noTimm = missingTool(
  "timm in .tools/pylib (forward_features against timm)",
  timmInstalled() ? null : `no ${PYLIB_DIR}/timm (tools/setup.sh installs it when the package index has timm 1.0.29)`,
);

Deno.test("export backbone: timm 1.0 loads it strictly and its forward_features matches our tower", () => {
  const before = liveTensors();
  const dir = Deno.makeTempDirSync({ prefix: "dc_export_timm_" });
  const model = buildPreset("tiny_synthetic");
  try {
    assert(model instanceof DetailCLIP, `tiny_synthetic builds a ${model.constructor.name}, not DetailCLIP`);
    tidy(() =>
      noGrad(() => {
        for (const p of model.parameters()) p.add_(Tensor.randn(p.shape).mul(0.2));
      })
    );
    const tensors = new Map<string, Tensor>();
    for (const [key, value] of model.stateDict()) tensors.set(`model.${key}`, value);
    const path = saveCheckpoint(dir, { tensors, meta: { step: 0, model_config: model.config, tokenizer_merges: [] } });
    const { vision } = model.config;
    const sizes = [vision.width, vision.depth, vision.patchSize, vision.imageSize].map(String);
    const timm = !noTimm;
    let wrongTower: string[] | null = null;
    for (const teacher of [false, true]) {
      const out = `${dir}/backbone-${teacher}.safetensors`;
      const args = ["backbone", "--checkpoint", path, "--out", out, ...(teacher ? ["--teacher"] : [])];
      assertEquals(quietly(() => runExport(args)), 0, "export exit code");
      tidy(() =>
        noGrad(() => {
          const images = Tensor.randn([3, 3, vision.imageSize, vision.imageSize]); // images: (B, 3, H, W)
          const tower = teacher ? model.visual_ema : model.visual;
          const { tokens } = tower.forwardFeatures(images); // tokens: (B, 1 + L, D), after the final norm
          writeSafeTensors(`${dir}/images.safetensors`, { images });
          writeSafeTensors(`${dir}/tokens.safetensors`, { tokens });
        })
      );
      const check = [
        "tests/export_check.py",
        out,
        ...sizes,
        "--heads",
        String(vision.heads),
        "--features",
        `${dir}/images.safetensors`,
        `${dir}/tokens.safetensors`,
      ];
      const result = new Deno.Command("/usr/bin/python3", { args: check, env: pylibEnv() }).outputSync();
      const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      assert(result.success, `export_check.py --features (teacher=${teacher}) failed:\n${text}`);
      const expected = timm ? /^ok 30 \(timm 1\.0\.29; forward_features max abs diff / : /^ok 30 \(timm-style module; /;
      assert(expected.test(text), text);
      console.log(`teacher=${teacher}: ${text.trim()}`);
      check[1] = `${dir}/backbone-false.safetensors`;
      if (timm && teacher) wrongTower = check;
    }
    // The comparison can fail: the student's file against the teacher's tokens (the towers differ after perturbing).
    if (wrongTower !== null) {
      const wrong = new Deno.Command("/usr/bin/python3", { args: wrongTower, env: pylibEnv() }).outputSync();
      const text = new TextDecoder().decode(wrong.stdout);
      assert(!wrong.success && text.includes("forward_features: max abs diff"), `a wrong tower passes: ${text}`);
    }
  } finally {
    model.dispose();
    Deno.removeSync(dir, { recursive: true });
  }
  assertEquals(liveTensors(), before, "live tensors after the test");
});
