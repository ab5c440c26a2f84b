// compile.ts: `deno task compile [--out FILE] [--no-check]` builds the single binary dist/detailclip with
// `deno compile`, embedding native/build/libdetailclip.so with `--include`. At start the binary extracts that copy
// into a per-version cache folder and loads it (src/torch/lib.ts); libtorch comes from the system or
// DETAILCLIP_LIBTORCH.
//
// `deno compile` writes the script into a copy of `denort`, Deno's runtime without its tooling, which it downloads
// from Deno's release server unless DENORT_BIN names a local one (the deno binary itself cannot stand in: it ignores
// the embedded program). npm has no denort package, and that server is out of reach here, so offline this tool ends
// with one line saying to set DENORT_BIN instead of Deno's multi-line network error.
import { parseArgs } from "node:util";

const root = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const LIBRARY = "native/build/libdetailclip.so";

/** The one line printed when `deno compile` cannot get its runtime. */
export const DENORT_MISSING = `deno compile needs the denort runtime of Deno ${Deno.version.deno}: set ` +
  "DENORT_BIN=/path/to/denort (download unavailable offline)";

/** A failure of this tool that the user can act on; printed as one line. */
export class CompileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CompileError";
  }
}

export interface CompileOptions {
  /** Output binary path. */
  out: string;
  /** Type-check first (deno compile's default); tests turn it off to stay quick. */
  check: boolean;
}

/**
 * Deno's error when the runtime cannot be fetched names the denort archive and the step ("Setting up base binary")
 * followed by the network cause; both must be there, so that a real compile error is never mistaken for it.
 */
export function isDenortDownloadFailure(stderr: string): boolean {
  const aboutRuntime = /denort-[\w.-]+\.zip|Setting up base binary/.test(stderr);
  const network = /error sending request|dns error|Connect|connection|timed out|tcp connect|certificate/i.test(stderr);
  return aboutRuntime && network;
}

/**
 * deno compile embeds the whole node_modules/ folder; the bundler (esbuild, ~11 MB with its binary) is there only for
 * `deno task bundle` and would make the binary larger for nothing. `--exclude` takes no effect on a folder inside
 * node_modules/ (Deno 2.9.6), but does on files, so every file of those packages is listed.
 */
function buildOnlyFiles(): string[] {
  const files: string[] = [];
  const walk = (relative: string): void => {
    for (const entry of Deno.readDirSync(`${root}/${relative}`)) {
      if (entry.isDirectory) walk(`${relative}/${entry.name}`);
      else if (entry.isFile) files.push(`${relative}/${entry.name}`);
    }
  };
  const folder = "node_modules/.deno";
  try {
    for (const entry of Deno.readDirSync(`${root}/${folder}`)) {
      if (entry.isDirectory && /^(esbuild|@esbuild\+[^@]+)@/.test(entry.name)) walk(`${folder}/${entry.name}`);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error; // no node_modules yet: nothing to leave out
  }
  return files;
}

/** The environment for `deno compile`: ours, without colours, and without an empty DENORT_BIN (Deno would use ''). */
function compileEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  if (env.DENORT_BIN === "") delete env.DENORT_BIN;
  env.NO_COLOR = "1";
  return env;
}

/** Runs `deno compile`; returns the binary's size in bytes. */
export async function compile(options: CompileOptions): Promise<number> {
  try {
    Deno.statSync(`${root}/${LIBRARY}`);
  } catch {
    throw new CompileError(`${LIBRARY} is not built; run \`deno task build\` first`);
  }
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined && denort !== "") {
    let isFile = false;
    try {
      isFile = Deno.statSync(denort).isFile;
    } catch { /* reported below */ }
    if (!isFile) throw new CompileError(`DENORT_BIN=${denort} is not a file; point it at Deno's denort binary`);
  }
  await Deno.mkdir(options.out.slice(0, options.out.lastIndexOf("/")) || "/", { recursive: true });
  const args = [
    "compile",
    "--allow-all",
    "--unstable-ffi",
    ...(options.check ? [] : ["--no-check"]),
    "--include",
    LIBRARY,
    ...buildOnlyFiles().flatMap((path) => ["--exclude", path]),
    "--output",
    options.out,
    "cli/main.ts",
  ];
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: compileEnv(),
    clearEnv: true,
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  if (!result.success) {
    if (isDenortDownloadFailure(stderr)) throw new CompileError(DENORT_MISSING);
    // Anything else is a real compile error (a type error, a bad include): Deno's own message is the useful part.
    console.error(stderr.trimEnd());
    throw new CompileError(`deno compile failed (exit code ${result.code})`);
  }
  return (await Deno.stat(options.out)).size;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { out: { type: "string" }, "no-check": { type: "boolean" } },
    strict: true,
  });
  const out = values.out ?? `${root}/dist/detailclip`;
  try {
    const size = await compile({ out: out.startsWith("/") ? out : `${Deno.cwd()}/${out}`, check: !values["no-check"] });
    console.error(`detailclip: compiled ${out} (${(size / 2 ** 20).toFixed(0)} MiB)`);
  } catch (error) {
    if (!(error instanceof CompileError)) throw error;
    console.error(`detailclip compile: ${error.message}`);
    Deno.exit(1);
  }
}
