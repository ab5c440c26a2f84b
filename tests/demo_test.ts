// demo_test.ts: the README's train command as a new user runs it — `deno task train` with no options but an output
// folder — must learn: the loss down to 70% of where it started, zero-shot accuracy on held-out images at least twice
// chance, retrieval better than before training. Its wall time is reported (summary.json), not asserted: speed is for
// bench/, never a test's pass condition.
import { assert } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;

Deno.test("the built-in default run learns (loss, zero-shot, retrieval)", () => {
  const dir = Deno.makeTempDirSync();
  const result = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-ffi", main, "train", "--output-dir", dir],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const output = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assert(result.code === 0, `the default run failed:\n${output.slice(-3000)}`);
  const summary = JSON.parse(Deno.readTextFileSync(`${dir}/summary.json`));
  console.log(JSON.stringify(summary));
  assert(summary.loss_last <= 0.7 * summary.loss_first, `loss ${summary.loss_first} -> ${summary.loss_last}`);
  assert(
    summary.zeroshot_top1_after >= 2 * summary.zeroshot_chance,
    `zero-shot ${summary.zeroshot_top1_after}% vs chance ${summary.zeroshot_chance}%`,
  );
  assert(summary.retrieval_r1_after > summary.retrieval_r1_before, "retrieval did not improve");
  const svg = Deno.readTextFileSync(`${dir}/loss_curve.svg`);
  assert(svg.startsWith("<svg") || svg.includes("<svg"), "loss curve is not an SVG");
  Deno.removeSync(dir, { recursive: true });
});
