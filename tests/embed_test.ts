// embed_test.ts: `deno task embed` on the three kinds of checkpoint it reads. Ours (an untrained CLIP_tiny_synthetic
// saved as training saves it) and the same weights converted to an official DetailCLIP .pt (tests/official_fixtures.py,
// Debian's python3-torch) must give identical image embeddings; an open_clip-made TorchScript archive (OpenAI's
// container, tests/openclip_fixtures.py) must give open_clip's own text embeddings for the same captions through our
// tokenizer and OpenAI's vocabulary. Rows are L2-normalised and in input order; an unreadable image is an error.
import { describeFailure, EXIT } from "../cli/errors.ts";
import { existsSync } from "node:fs";
import { main as embedMain } from "../cli/embed.ts";
import { main as evalMain } from "../cli/eval.ts";
import { UsageError } from "../cli/usage_error.ts";
import { syntheticSample } from "../src/data/synthetic.ts";
import { encodePng } from "../src/formats/png.ts";
import { SafeTensorsFile } from "../src/torch/io.ts";
import { liveTensors, Tensor, tidy } from "../src/torch/mod.ts";
import { saveUntrainedCheckpoint } from "./eval_checkpoint.ts";
import { assert, assertEquals, missingTool, pythonModulesMissing, quietly } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const ROOT = new URL("..", import.meta.url).pathname;
const OPENAI_BPE = `${ROOT}.tools/bpe_simple_vocab_16e6.txt.gz`;
const OPENCLIP_PYLIB = `${ROOT}.tools/openclip-pylib`;

const noTorch = missingTool("python3-torch", pythonModulesMissing(["torch"]));
const noOpenClip = missingTool(
  "open_clip 3.3.0",
  existsSync(`${OPENCLIP_PYLIB}/open_clip`) ? null : ".tools/openclip-pylib/open_clip is missing (tools/setup.sh)",
);
const noOpenAiBpe = missingTool(
  "OpenAI's BPE vocabulary",
  existsSync(OPENAI_BPE) ? null : ".tools/bpe_simple_vocab_16e6.txt.gz is missing (tools/setup.sh)",
);

function python(args: string[], env: Record<string, string> = {}): void {
  const out = new Deno.Command(PYTHON, { args, env, stdout: "piped", stderr: "piped" }).outputSync();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success, `python3 ${args.join(" ")} failed:\n${text}`);
}

const OFFICIAL_FROM_OURS = `
import argparse, sys, torch
from official_fixtures import read_safetensors
tensors, _ = read_safetensors(sys.argv[1])
state = {"module." + k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
torch.save({"epoch": 1, "state_dict": state, "args": argparse.Namespace(model="CLIP_tiny_synthetic")}, sys.argv[2])
`;

async function embed(args: string[], command = embedMain): Promise<number> {
  const { error, log } = console;
  console.error = () => {};
  console.log = () => {};
  try {
    return await command(args);
  } finally {
    console.error = error;
    console.log = log;
  }
}

function readEmbeddings(path: string): Map<string, Tensor> {
  using file = SafeTensorsFile.open(path);
  return file.tensors();
}

/** Row norms of (N, E). */
function rowNorms(t: Tensor): number[] {
  return tidy(() => Array.from(t.pow(2).sum(-1).sqrt().toArray()));
}

function maxAbsDiff(a: Tensor, b: Tensor): number {
  assertEquals(a.shape, b.shape, "shapes");
  return tidy(() => a.sub(b).abs().amax().item());
}

/** Three synthetic 64 px PNGs. */
function writeImages(dir: string): string[] {
  return [0, 1, 2].map((i) => {
    const { pixels } = syntheticSample("val", i, { size: 64 });
    const path = `${dir}/img${i}.png`;
    Deno.writeFileSync(path, encodePng(64, 64, pixels, "rgb"));
    return path;
  });
}

Deno.test({
  name: "embed: our checkpoint and the same weights as an official DetailCLIP .pt give the same image embeddings",
  ignore: noTorch,
  fn: async () => {
    const before = liveTensors();
    const dir = Deno.makeTempDirSync({ prefix: "dc_embed_ours_" });
    try {
      const ours = quietly(() => saveUntrainedCheckpoint(dir));
      const images = writeImages(dir);
      Deno.writeTextFileSync(`${dir}/list.txt`, `img2.png\n${images[0]}\n\nimg1.png\n`);
      const texts = ["a red circle", "two blue squares", "a green triangle on the left"];
      assertEquals(
        await embed(["--checkpoint", ours, "--images", `${dir}/list.txt`, "--text", ...texts, "--out", `${dir}/a.st`]),
        0,
      );
      // The official layout (main.py's torch.save): epoch, state_dict with DDP's `module.`, args.model.
      python(["-c", OFFICIAL_FROM_OURS, ours, `${dir}/official.pt`], {
        PYTHONPATH: new URL(".", import.meta.url).pathname,
      });
      assertEquals(
        await embed([
          "--checkpoint",
          `${dir}/official.pt`,
          "--image",
          ...images,
          "--batch-size",
          "2",
          "--out",
          `${dir}/b.st`,
        ]),
        0,
      );
      const a = readEmbeddings(`${dir}/a.st`);
      const b = readEmbeddings(`${dir}/b.st`);
      try {
        const ia = a.get("image_embeds")!, ib = b.get("image_embeds")!;
        assertEquals(ia.shape, [3, 32]);
        assertEquals(a.get("text_embeds")!.shape, [3, 32]);
        for (const n of [...rowNorms(ia), ...rowNorms(a.get("text_embeds")!)]) {
          assert(Math.abs(n - 1) < 1e-5, `norm ${n}`);
        }
        // The list's order (img2, img0, img1) against the official file's (img0, img1, img2).
        const reordered = tidy(() => ib.indexSelect(0, Tensor.fromArray([2, 0, 1], [3], { dtype: "int64" })));
        try {
          const diff = maxAbsDiff(ia, reordered);
          console.log(`ours vs official .pt image embeddings: max abs diff ${diff}`);
          assert(diff <= 1e-6, `ours and the official .pt differ by ${diff}`);
        } finally {
          reordered.dispose();
        }
        assert(Math.abs(a.get("logit_scale")!.item() - 1 / 0.07) < 1e-3, "logit_scale is exp(log(1/0.07))");
        assertEquals(b.has("text_embeds"), false);
      } finally {
        for (const t of [...a.values(), ...b.values()]) t.dispose();
      }
      // An image that does not decode is an error, not a missing row; bad options are usage errors.
      Deno.writeTextFileSync(`${dir}/bad.png`, "not a png");
      // (the command throws; cli/errors.ts makes that one line and the data status)
      const unreadable = await embed([
        "--checkpoint",
        ours,
        "--image",
        images[0],
        `${dir}/bad.png`,
        "--out",
        `${dir}/c.st`,
      ])
        .then(() => null, (error) => error);
      assertEquals(describeFailure("embed", unreadable).status, EXIT.data);
      assert(!existsSync(`${dir}/c.st`), "an output was written despite an unreadable image");
      let usage = "";
      try {
        await embed(["--checkpoint", ours, "--out", `${dir}/c.st`]);
      } catch (error) {
        if (error instanceof UsageError) usage = error.message;
      }
      assert(usage.includes("nothing to embed"), usage);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    assertEquals(liveTensors(), before, "live tensors after embed");
  },
});

Deno.test({
  name: "embed and eval: an open_clip TorchScript archive gives open_clip's text embeddings through our tokenizer",
  ignore: noOpenClip || noOpenAiBpe,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "dc_embed_openclip_" });
    try {
      const pythonPath = [OPENCLIP_PYLIB, `${ROOT}.tools/pylib`].join(":");
      python([new URL("./openclip_fixtures.py", import.meta.url).pathname, "small_quickgelu", dir], {
        PYTHONPATH: pythonPath,
      });
      const images = writeImages(dir);
      const captions = ["a photo of a cat", "a diagram of a cell, with labels", ""];
      const code = await embed([
        "--checkpoint",
        `${dir}/small_jit.pt`,
        "--image",
        images[0],
        images[1],
        images[0],
        "--text",
        ...captions,
        "--bpe",
        OPENAI_BPE,
        "--out",
        `${dir}/e.st`,
      ]);
      assertEquals(code, 0);
      const out = readEmbeddings(`${dir}/e.st`);
      const reference = readEmbeddings(`${dir}/small_io.safetensors`);
      try {
        const diff = maxAbsDiff(out.get("text_embeds")!, reference.get("text_embeds")!);
        console.log(`embed vs open_clip text embeddings: max abs diff ${diff}`);
        assert(diff <= 1e-4, `text embeddings differ from open_clip's by ${diff}`);
        const imageEmbeds = out.get("image_embeds")!;
        assertEquals(imageEmbeds.shape, [3, 64]);
        for (const n of rowNorms(imageEmbeds)) assert(Math.abs(n - 1) < 1e-5, `norm ${n}`);
        const rows = tidy(() => [0, 1, 2].map((i) => imageEmbeds.select(0, i).keep()));
        try {
          assertEquals(maxAbsDiff(rows[0], rows[2]), 0, "the same image twice");
          assert(maxAbsDiff(rows[0], rows[1]) > 1e-3, "two different images embed the same");
        } finally {
          for (const r of rows) r.dispose();
        }
        assert(Math.abs(out.get("logit_scale")!.item() - Math.exp(2.5)) < 1e-3, "logit_scale is exp(2.5)");
      } finally {
        for (const t of [...out.values(), ...reference.values()]) t.dispose();
      }
      // `deno task eval` takes the same file: zero-shot, retrieval and the probes run (random weights: only the counts
      // are checked).
      const common = ["--checkpoint", `${dir}/small_jit.pt`, "--bpe", OPENAI_BPE, "--size", "12"];
      for (const task of ["zeroshot", "retrieval"]) {
        assertEquals(await embed([task, ...common, "--out", `${dir}/${task}.json`], evalMain), 0, `eval ${task}`);
        const results = JSON.parse(Deno.readTextFileSync(`${dir}/${task}.json`)).results;
        assertEquals(results.count ?? results.images, 12, `eval ${task} images: ${JSON.stringify(results)}`);
      }
      for (const task of ["probe", "segprobe"]) {
        const code = await embed([task, ...common, "--train-size", "24", "--out", `${dir}/${task}.json`], evalMain);
        assertEquals(code, 0, `eval ${task}`);
        const results = JSON.parse(Deno.readTextFileSync(`${dir}/${task}.json`)).results;
        assertEquals([results.trainSize, results.testSize], [24, 12], `eval ${task}: ${JSON.stringify(results)}`);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
