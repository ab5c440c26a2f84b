// train_files_test.ts: `deno task train --dataset csv` end to end on a tiny generated manifest: PNG images written
// with our encoder, a BPE learned from the captions, a missing and a corrupt image that must be skipped and
// counted, and a finite loss after a few steps.
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { encodePng } from "../src/formats/png.ts";
import { syntheticSample } from "../src/data/synthetic.ts";
import { assert, assertEquals } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;

Deno.test("train --dataset csv reads a manifest, skips bad images with counts, and learns a few steps", () => {
  const dir = Deno.makeTempDirSync();
  const rows = ["filepath,title"];
  const captions: string[] = [];
  for (let i = 0; i < 24; i++) {
    const sample = syntheticSample("train", i, { size: 48 });
    Deno.writeFileSync(`${dir}/img${i}.png`, encodePng(48, 48, sample.pixels));
    rows.push(`img${i}.png,"${sample.caption}"`);
    captions.push(sample.caption);
  }
  Deno.writeTextFileSync(`${dir}/broken.png`, "not a png");
  rows.push("broken.png,a broken image", "missing.png,a missing image");
  Deno.writeTextFileSync(`${dir}/train.csv`, rows.join("\n") + "\n");
  writeMerges(`${dir}/bpe.txt`, trainBpe(captions, 600));
  const result = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--unstable-ffi",
      main,
      "train",
      "--dataset",
      "csv",
      "--metadata",
      `${dir}/train.csv`,
      "--bpe",
      `${dir}/bpe.txt`,
      "--batch-size",
      "8",
      "--max-steps",
      "4",
      "--print-freq",
      "2",
      "--threads",
      "1",
      "--output-dir",
      `${dir}/run`,
      "--epochs",
      "2",
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assertEquals(result.code, 0, out);
  const skipped = /skipped samples: (.*)/.exec(out)?.[1] ?? "";
  assert(/image_missing \d+/.test(skipped), `the missing image is not counted:\n${out}`);
  assert(/(unsupported|corrupt) \d+/.test(skipped), `the broken image is not counted:\n${out}`);
  const summary = JSON.parse(Deno.readTextFileSync(`${dir}/run/summary.json`));
  assertEquals(summary.steps, 4);
  assert(Number.isFinite(summary.loss_last), JSON.stringify(summary));
  assertEquals(summary.zeroshot_top1_after, null, "no synthetic evaluation on a file dataset");
  Deno.removeSync(dir, { recursive: true });
});
