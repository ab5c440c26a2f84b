// golden_test.ts: the parity contract. `deno task golden --ref tests/fixtures/golden/tiny` must pass (exit 0) as a user
// runs it, and a deliberately perturbed reference must make it fail (exit 1), so the comparison itself can fail.
import { assert, assertEquals, GOLDEN_DIR } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;

function golden(ref: string, out?: string): { code: number; stdout: string; stderr: string } {
  const args = ["run", "--allow-all", "--unstable-ffi", main, "golden", "--ref", ref, ...(out ? ["--out", out] : [])];
  const result = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).outputSync();
  const decoder = new TextDecoder();
  return { code: result.code, stdout: decoder.decode(result.stdout), stderr: decoder.decode(result.stderr) };
}

Deno.test("golden step on tests/fixtures/golden/tiny is within tolerance", () => {
  const out = Deno.makeTempDirSync();
  const result = golden(GOLDEN_DIR, out);
  assertEquals(result.code, 0, `golden failed:\n${result.stdout}\n${result.stderr}`);
  for (const file of ["outputs", "grads", "after"]) {
    assert(result.stdout.includes(`PASS ${file}.safetensors`), `no PASS line for ${file}:\n${result.stdout}`);
    assert(Deno.statSync(`${out}/${file}.safetensors`).size > 0, `--out did not write ${file}.safetensors`);
  }
  Deno.removeSync(out, { recursive: true });
});

Deno.test("golden fails when the reference is perturbed", () => {
  // Same inputs and weights, but the reference loss values shifted: the outputs comparison must fail.
  const dir = Deno.makeTempDirSync();
  for (const file of ["meta.json", "weights.safetensors", "inputs.safetensors"]) {
    Deno.copyFileSync(`${GOLDEN_DIR}/${file}`, `${dir}/${file}`);
  }
  const { code: runCode, stdout: firstRun } = golden(dir, dir);
  assertEquals(runCode, 0, `a reference without outputs compares nothing and passes:\n${firstRun}`);
  // Our own outputs become the reference, with one element of text_embed nudged by 1e-3 (far above 1e-4 relative).
  const bytes = Deno.readFileSync(`${dir}/outputs.safetensors`);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const [begin] = header["text_embed"].data_offsets as [number, number];
  const view = new DataView(bytes.buffer, 8 + headerLength + begin, 4);
  view.setFloat32(0, view.getFloat32(0, true) + 1e-3, true);
  Deno.writeFileSync(`${dir}/outputs.safetensors`, bytes);
  const result = golden(dir);
  assertEquals(result.code, 1, `a perturbed reference must fail:\n${result.stdout}`);
  assert(result.stdout.includes("FAIL outputs.safetensors"), result.stdout);
  assert(result.stdout.includes("text_embed"), `the failing tensor is named:\n${result.stdout}`);
  Deno.removeSync(dir, { recursive: true });
});
