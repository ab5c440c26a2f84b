// require_tools_test.ts: missingTool (tests/helpers.ts), which every test needing an optional tool goes through. A
// missing tool must make its tests show as ignored with the reason on one warning line, never as passed; with
// DETAILCLIP_REQUIRE_TOOLS=1 (CI) it must be one failing test naming the tool and the reason. Checked by running
// `deno test` on a small file that needs a tool that does not exist, with and without the variable.
import { assert, assertEquals, commandMissing, missingTool, pythonModulesMissing } from "./helpers.ts";

const helpers = new URL("./helpers.ts", import.meta.url).href;

const PROBE = `
import { commandMissing, missingTool } from "${helpers}";
const absent = missingTool("the no-such-tool compiler", commandMissing("dc-no-such-tool-7f3a"));
Deno.test({ name: "needs the tool", ignore: absent }, () => {
  throw new Error("ran without its tool");
});
Deno.test("needs nothing", () => {});
`;

function runProbe(env: Record<string, string>): { code: number; output: string } {
  const dir = Deno.makeTempDirSync({ prefix: "dc_require_tools_" });
  try {
    Deno.writeTextFileSync(`${dir}/probe_test.ts`, PROBE);
    const result = new Deno.Command(Deno.execPath(), {
      args: ["test", "--allow-all", "--no-check", `${dir}/probe_test.ts`],
      env: { ...env, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const decoder = new TextDecoder();
    return { code: result.code, output: decoder.decode(result.stdout) + decoder.decode(result.stderr) };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("missingTool: a missing tool ignores its tests with one warning line giving the reason", () => {
  const { code, output } = runProbe({ DETAILCLIP_REQUIRE_TOOLS: "" });
  assertEquals(code, 0, output);
  assert(/ok \| 1 passed \| 0 failed \| 1 ignored/.test(output), output);
  assert(output.includes("needs the tool ... ignored"), output);
  const warnings = output.split("\n").filter((line) => line.startsWith("ignoring the tests that need"));
  assertEquals(warnings, [
    "ignoring the tests that need the no-such-tool compiler: dc-no-such-tool-7f3a is not installed",
  ]);
});

Deno.test("missingTool: with DETAILCLIP_REQUIRE_TOOLS=1 a missing tool is one failing test that names it", () => {
  const { code, output } = runProbe({ DETAILCLIP_REQUIRE_TOOLS: "1" });
  assert(code !== 0, output);
  assert(/FAILED \| 1 passed \| 1 failed \| 1 ignored/.test(output), output);
  assert(output.includes("required tool: the no-such-tool compiler ... FAILED"), output);
  assert(
    output.includes(
      "DETAILCLIP_REQUIRE_TOOLS=1, but the tests that need the no-such-tool compiler cannot run: " +
        "dc-no-such-tool-7f3a is not installed",
    ),
    output,
  );
});

Deno.test("missingTool: a present tool registers nothing and ignores nothing; the probes say why", () => {
  assertEquals(missingTool("a tool that is here", null), false);
  assertEquals(commandMissing(Deno.execPath()), null, "deno --version runs");
  assertEquals(commandMissing("dc-no-such-tool-7f3a"), "dc-no-such-tool-7f3a is not installed");
  assertEquals(commandMissing("false", []), "`false` failed (exit status 1)");
  const missingModule = pythonModulesMissing(["dc_no_such_module_7f3a"]);
  assert(missingModule !== null && missingModule.includes("dc_no_such_module_7f3a"), String(missingModule));
});
