// layers_test.ts: the folders of src/ form layers, and an import may only go down. It scans every import and
// re-export of src/ (static and dynamic) and fails naming the file and the import that goes up or sideways, so a
// directory cycle (src/torch reading src/data, src/eval reading src/train) cannot come back unnoticed.
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { assertEquals } from "./helpers.ts";

const SRC = fileURLToPath(new URL("../src/", import.meta.url));

// Which project folders each folder of src/ may import from (besides itself). formats and fs are leaves: file
// formats and file-system helpers that know nothing of tensors, models or data sets.
const MAY_IMPORT: Record<string, readonly string[]> = {
  formats: [],
  fs: [],
  torch: ["formats", "fs"],
  nn: ["torch"],
  models: ["nn", "torch"],
  losses: ["models", "nn", "torch"],
  data: ["torch", "formats", "fs"],
  checkpoint: ["models", "nn", "torch", "formats", "fs"],
  viz: ["data", "models", "nn", "torch", "formats", "fs"],
  eval: ["checkpoint", "viz", "data", "losses", "models", "nn", "torch", "formats", "fs"],
  train: ["eval", "checkpoint", "viz", "data", "losses", "models", "nn", "torch", "formats", "fs"],
};

/** The module specifiers of `source`: import/export ... from "x", import "x", import("x"). */
function importSpecifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gms,
    /^\s*import\s*["']([^"']+)["']/gm,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) for (const m of source.matchAll(pattern)) found.push(m[1]);
  return found;
}

/** "src/<folder>/file.ts imports <specifier> (src/<target>)" for every import that MAY_IMPORT forbids. */
function forbiddenImports(file: string, source: string): string[] {
  const rel = relative(SRC, file);
  const folder = rel.split(/[\\/]/)[0];
  const allowed = MAY_IMPORT[folder];
  if (allowed === undefined) return [`src/${rel}: folder src/${folder} has no layer in tests/layers_test.ts`];
  const problems: string[] = [];
  for (const specifier of importSpecifiers(source)) {
    if (!specifier.startsWith(".")) continue; // npm:, jsr:, node: are not project folders
    const target = relative(SRC, resolve(dirname(file), specifier));
    if (target.startsWith("..")) {
      problems.push(`src/${rel} imports "${specifier}", outside src/`);
      continue;
    }
    const targetFolder = target.split(/[\\/]/)[0];
    if (targetFolder !== folder && !allowed.includes(targetFolder)) {
      problems.push(
        `src/${rel} imports "${specifier}" (src/${targetFolder}): src/${folder} may import only ` +
          (allowed.length === 0 ? "itself" : allowed.map((f) => `src/${f}`).join(", ")),
      );
    }
  }
  return problems;
}

function* sourceFiles(dir: string): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}

Deno.test("layers: no import in src/ goes to a folder above its own", () => {
  const problems: string[] = [];
  let imports = 0;
  for (const file of sourceFiles(SRC)) {
    const source = Deno.readTextFileSync(file);
    imports += importSpecifiers(source).length;
    problems.push(...forbiddenImports(file, source));
  }
  if (imports < 100) throw new Error(`only ${imports} imports found in src/: the scanner is broken`);
  if (problems.length > 0) {
    throw new Error(`${problems.length} imports break the layering:\n  ${problems.join("\n  ")}`);
  }
});

Deno.test("layers: the scanner reports the edges the layering forbids", () => {
  const at = (path: string): string => join(SRC, path);
  const multiLine = 'import {\n  ZipArchive,\n  ZipError,\n} from "../data/zip.ts";\n';
  assertEquals(forbiddenImports(at("torch/pt_file.ts"), multiLine).length, 1);
  assertEquals(forbiddenImports(at("eval/model.ts"), 'import { x } from "../train/checkpoint.ts";').length, 1);
  assertEquals(forbiddenImports(at("data/loader.ts"), 'export { y } from "../models/vit.ts";').length, 1);
  assertEquals(forbiddenImports(at("formats/zip.ts"), 'const m = await import("../torch/mod.ts");').length, 1);
  assertEquals(forbiddenImports(at("eval/model.ts"), 'import type { T } from "../checkpoint/checkpoint.ts";'), []);
  assertEquals(forbiddenImports(at("torch/io.ts"), 'import { createHash } from "node:crypto";'), []);
  const [message] = forbiddenImports(at("eval/model.ts"), 'import { x } from "../train/checkpoint.ts";');
  if (!message.includes("src/eval/model.ts") || !message.includes("../train/checkpoint.ts")) {
    throw new Error(`the message must name the file and the import: ${message}`);
  }
});
