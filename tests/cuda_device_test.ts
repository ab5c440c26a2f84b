// cuda_device_test.ts: asking for a GPU where none is usable. `train --device cuda` (and cuda:N) must stop before
// building anything, with one line that says why and what to do, and exit status 2 (a usage error), both with the
// CPU-only libtorch and with the CUDA build on a machine without a GPU (tools/check_cuda_build.sh runs this file).
// On a machine with a GPU there is nothing to refuse, so the test is ignored there.
import { cudaIsAvailable } from "../src/torch/mod.ts";
import { assert, assertEquals } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;

async function train(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    // --quiet: Deno's own diagnostics (a first run's module downloads) are not the command's output.
    args: ["run", "--quiet", "--allow-all", "--unstable-ffi", main, "train", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: output.code, stdout: text.decode(output.stdout), stderr: text.decode(output.stderr) };
}

for (const device of ["cuda", "cuda:1"]) {
  Deno.test({
    name: `train --device ${device} without a usable GPU: one line on stderr, exit status 2`,
    ignore: cudaIsAvailable(), // a CUDA device is usable here: nothing to refuse
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "cuda_device_test_" });
      try {
        const { code, stdout, stderr } = await train(["--device", device, "--max-steps", "1", "--output-dir", dir]);
        const lines = stderr.split("\n").filter((line) => line.trim() !== "");
        assertEquals(code, 2, `exit status (stderr: ${stderr})`);
        assertEquals(lines.length, 1, `stderr lines: ${JSON.stringify(lines)}`);
        assert(lines[0].startsWith("detailclip train: --device " + device), `message: ${lines[0]}`);
        assert(lines[0].includes("--device cpu"), `the message should say what to do instead: ${lines[0]}`);
        assertEquals(stdout, "", "nothing should be printed before the device is checked");
        assertEquals([...Deno.readDirSync(dir)].length, 0, "nothing should be written before the device is checked");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
