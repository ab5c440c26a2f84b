// bundle.ts: `deno task bundle [--out FILE]` builds the whole CLI (cli/main.ts and everything it imports, npm packages
// included) into one ES module, dist/detailclip.js by default, with esbuild from npm. The result needs only Deno and
// the native library at run time: `deno run --allow-all --unstable-ffi dist/detailclip.js <command>`.
//
// esbuild's npm package runs its platform binary (@esbuild/linux-x64, an optional dependency that Deno installs like
// any other package) as a child process; its postinstall script, which Deno does not run, only validates that binary,
// so nothing else is needed. ESBUILD_BINARY_PATH (esbuild's own variable) points it at another binary if ever needed.
import * as esbuild from "npm:esbuild@0.28.2";
import { parseArgs } from "node:util";

const root = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");

/** A failure of this tool that the user can act on; printed as one line. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BundleError";
  }
}

interface DenoConfig {
  version?: string;
  imports?: Record<string, string>;
}

/** Splits an `npm:name@version/subpath` specifier (the forms deno.json's import map uses). */
function parseNpmSpecifier(specifier: string): { name: string; version: string; subpath: string } {
  const match = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)(?:@([^/]+))?(\/.*)?$/.exec(specifier);
  if (match === null) throw new BundleError(`cannot parse npm specifier '${specifier}'`);
  return { name: match[1], version: match[2] ?? "", subpath: match[3] ?? "" };
}

/**
 * Resolves what esbuild cannot on its own: deno.json's import map and `npm:` specifiers go to the packages Deno
 * installed in node_modules/ (nodeModulesDir is "auto"), after checking that the installed version is the pinned one;
 * `node:` built-ins stay imports, which Deno provides at run time. Remote modules (jsr:, https:) are refused: the
 * bundle must not need the network.
 */
function denoResolver(imports: Record<string, string>): esbuild.Plugin {
  const checked = new Set<string>();
  const checkVersion = (name: string, version: string): void => {
    if (version === "" || checked.has(name)) return;
    let installed: string;
    try {
      installed = JSON.parse(Deno.readTextFileSync(`${root}/node_modules/${name}/package.json`)).version;
    } catch {
      throw new BundleError(`npm package ${name} is not installed in node_modules/; run \`deno install\` first`);
    }
    // A range ("^1.2.0") cannot be compared this simply; the import map pins exact versions, so only those are.
    if (/^\d+\.\d+\.\d+/.test(version) && installed !== version) {
      throw new BundleError(`node_modules/${name} is ${installed} but deno.json pins ${version}; run \`deno install\``);
    }
    checked.add(name);
  };
  return {
    name: "deno-resolver",
    setup(build: esbuild.PluginBuild): void {
      build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, external: true }));
      build.onResolve({ filter: /^(jsr:|https?:)/ }, (args) => {
        throw new BundleError(`cannot bundle remote module ${args.path} (imported by ${args.importer})`);
      });
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.pluginData === "deno-resolver") return undefined;
        let specifier = args.path;
        const key = Object.keys(imports).find((k) => specifier === k || (k.endsWith("/") && specifier.startsWith(k)));
        if (key !== undefined) specifier = imports[key] + specifier.slice(key.length);
        if (!specifier.startsWith("npm:")) return undefined;
        const { name, version, subpath } = parseNpmSpecifier(specifier);
        checkVersion(name, version);
        const result = await build.resolve(name + subpath, {
          kind: args.kind,
          resolveDir: root,
          pluginData: "deno-resolver",
        });
        if (result.errors.length > 0) throw new BundleError(`cannot resolve ${specifier}: ${result.errors[0].text}`);
        return { path: result.path };
      });
    },
  };
}

/** Builds the bundle at `outfile` and returns its size in bytes. */
export async function bundle(outfile: string): Promise<number> {
  const config: DenoConfig = JSON.parse(await Deno.readTextFile(`${root}/deno.json`));
  const esbuildVersion = esbuild.version;
  try {
    await esbuild.build({
      entryPoints: [`${root}/cli/main.ts`],
      outfile,
      bundle: true,
      format: "esm",
      // Deno runs what V8 runs: no down-levelling (explicit resource management, top-level await stay as written).
      target: "esnext",
      platform: "neutral",
      mainFields: ["module", "main"],
      conditions: ["deno", "import", "default"],
      plugins: [denoResolver(config.imports ?? {})],
      banner: {
        js: `// detailclip ${config.version ?? ""} bundle (esbuild ${esbuildVersion}, from cli/main.ts). ` +
          "Run: deno run --allow-all --unstable-ffi detailclip.js <command>",
      },
      logLevel: "silent",
      legalComments: "none",
    });
  } catch (error) {
    if (error instanceof BundleError) throw error;
    const failure = error as { errors?: { text: string; location?: { file: string; line: number } | null }[] };
    const first = failure.errors?.[0];
    if (first === undefined) throw error;
    const where = first.location ? ` (${first.location.file}:${first.location.line})` : "";
    throw new BundleError(`esbuild failed: ${first.text}${where}`);
  } finally {
    // esbuild keeps its child process alive for further builds; stopping it lets this script exit.
    await esbuild.stop();
  }
  return (await Deno.stat(outfile)).size;
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { out: { type: "string" } }, strict: true });
  const outfile = values.out ?? `${root}/dist/detailclip.js`;
  try {
    const size = await bundle(outfile);
    console.error(`detailclip: bundled cli/main.ts into ${outfile} (${(size / 1024).toFixed(0)} KiB)`);
  } catch (error) {
    if (!(error instanceof BundleError)) throw error;
    console.error(`detailclip bundle: ${error.message}`);
    Deno.exit(1);
  }
}
