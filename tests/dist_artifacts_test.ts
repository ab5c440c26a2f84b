// dist_artifacts_test.ts: the two distributions of the CLI. The esbuild bundle is built into a temp folder and must
// behave like the source CLI (help, exact parameter counts, the golden step) with only Deno and the native library
// beside it; `deno compile` must either build a working binary or, without its runtime (offline), end with its one
// line. The library lookup that both rely on (src/torch/lib.ts) is tested on temp folders laid out like a source
// tree, a bundle and a binary, including the binary's extraction into its cache and libtorch from DETAILCLIP_LIBTORCH.
import {
  cacheRoot,
  extractLibrary,
  libraryCandidates,
  libraryPath,
  libtorchFiles,
  locateLibrary,
  type LookupContext,
  native,
  NativeLibraryError,
  openLibrary,
} from "../src/torch/lib.ts";
import { codes } from "../src/torch/symbols.ts";
import { DENORT_MISSING } from "../tools/compile.ts";
import { assert, assertEquals, assertThrows, GOLDEN_DIR } from "./helpers.ts";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const VITB16 = { model: "DetailCLIP_VITB16", total_params: 299127553, trainable_params: 165693697 };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command with extra environment (an empty value hides the parent's), without colours. */
async function run(command: string, args: string[], env: Record<string, string> = {}, cwd = root): Promise<Run> {
  const result = await new Deno.Command(command, {
    args,
    cwd,
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
  return { code: result.code, stdout: decode(result.stdout), stderr: decode(result.stderr) };
}

function describe(result: Run): string {
  return `exit ${result.code}\nstdout: ${result.stdout.slice(-2000)}\nstderr: ${result.stderr.slice(-2000)}`;
}

async function withTempDir(prefix: string, body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function sha256(path: string): Promise<string> {
  return crypto.subtle.digest("SHA-256", Deno.readFileSync(path)).then((digest) =>
    [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("")
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// The bundle

Deno.test("the esbuild bundle runs --help, info and the golden step like the source CLI", async () => {
  await withTempDir("dc-bundle-", async (dir) => {
    const bundle = `${dir}/detailclip.js`;
    const built = await run(Deno.execPath(), ["run", "--allow-all", "tools/bundle.ts", "--out", bundle]);
    assertEquals(built.code, 0, `deno task bundle: ${describe(built)}`);
    // Everything but Deno's node: built-ins is inside: no npm:, jsr: or relative import survives.
    const text = await Deno.readTextFile(bundle);
    const imports = [...text.matchAll(/^\s*import\s[^;]*?from\s+"([^"]+)"/gm)].map((m) => m[1]);
    assert(imports.length > 0, "the bundle keeps its node: imports");
    for (const specifier of imports) assert(specifier.startsWith("node:"), `unbundled import ${specifier}`);
    assert(!/\bimport\(\s*["']/.test(text), "no dynamic import left to resolve at run time");
    // The library beside the bundle, DETAILCLIP_LIB hidden, run from the temp folder (no deno.json, no node_modules).
    await Deno.symlink(libraryPath(), `${dir}/libdetailclip.so`);
    const cli = (...args: string[]): Promise<Run> =>
      run(Deno.execPath(), ["run", "--allow-all", "--unstable-ffi", bundle, ...args], { DETAILCLIP_LIB: "" }, dir);

    const help = await cli("--help");
    assertEquals(help.code, 0, describe(help));
    assert(help.stdout.startsWith("usage: detailclip <command>"), describe(help));
    for (const command of ["info", "train", "tokenize", "data", "golden"]) {
      assert(new RegExp(`^  ${command} `, "m").test(help.stdout), `--help lists ${command}: ${help.stdout}`);
    }

    const info = await cli("info", "--model", "DetailCLIP_VITB16");
    assertEquals(info.code, 0, describe(info));
    assertEquals(JSON.parse(info.stdout.trim()), VITB16, "parameter counts");

    const golden = await cli("golden", "--ref", GOLDEN_DIR);
    assertEquals(golden.code, 0, describe(golden));
    assert(golden.stdout.includes("golden: all tensors within tolerance"), describe(golden));
    assertEquals(golden.stdout.match(/^PASS /gm)?.length, 3, `three PASS lines: ${golden.stdout}`);

    // Without a library anywhere it may look, one line lists each place in order.
    await Deno.remove(`${dir}/libdetailclip.so`);
    const missing = await cli("info", "--model", "DetailCLIP_VITB16");
    assertEquals(missing.code, 2, describe(missing));
    const lines = missing.stderr.trim().split("\n");
    assertEquals(lines.length, 1, `one line: ${missing.stderr}`);
    const beside = lines[0].indexOf(`${dir}/libdetailclip.so (beside the bundle)`);
    const tree = lines[0].indexOf(
      `${new URL(`file://${dir}/../native/build/libdetailclip.so`).pathname} (source tree)`,
    );
    assert(beside >= 0 && tree > beside, `both places, in order: ${lines[0]}`);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// deno compile

/** Runs the binary's info with its cache in `dir` and checks the counts and the extracted copy. */
async function checkBinary(binary: string, dir: string): Promise<void> {
  const cache = `${dir}/cache`;
  const info = await run(binary, ["info", "--model", "DetailCLIP_VITB16"], {
    DETAILCLIP_LIB: "",
    XDG_CACHE_HOME: cache,
  }, dir);
  assertEquals(info.code, 0, describe(info));
  assertEquals(JSON.parse(info.stdout.trim()), VITB16, "parameter counts from the binary");
  const digest = await sha256(`${root}/native/build/libdetailclip.so`);
  const extracted = `${cache}/detailclip/${codes.ABI_VERSION}-${digest}/libdetailclip.so`;
  assertEquals(await sha256(extracted), digest, "the embedded library extracted to its per-version folder");
}

Deno.test("deno task compile builds a working binary, or fails offline with its one line", async () => {
  await withTempDir("dc-compile-", async (dir) => {
    const binary = `${dir}/detailclip`;
    const args = ["run", "--allow-all", "tools/compile.ts", "--out", binary, "--no-check"];
    const compiled = await run(Deno.execPath(), args, { DENORT_BIN: "" });
    if (compiled.code === 0) {
      await checkBinary(binary, dir); // a runtime was at hand (network or Deno's download cache)
      return;
    }
    assertEquals(compiled.code, 1, describe(compiled));
    assertEquals(compiled.stderr, `detailclip compile: ${DENORT_MISSING}\n`, "exactly the one line");
    assert(compiled.stdout === "", describe(compiled));
    for (const entry of Deno.readDirSync(dir)) assert(false, `left behind: ${entry.name}`);

    const wrong = await run(Deno.execPath(), args, { DENORT_BIN: `${dir}/no-such-denort` });
    assertEquals(wrong.code, 1, describe(wrong));
    assertEquals(wrong.stderr.trim().split("\n").length, 1, describe(wrong));
    assert(wrong.stderr.includes(`DENORT_BIN=${dir}/no-such-denort is not a file`), describe(wrong));
  });
});

Deno.test({
  name: "with DENORT_BIN, deno task compile builds a binary that extracts its library and runs info",
  ignore: !Deno.env.get("DENORT_BIN"),
  fn: async () => {
    await withTempDir("dc-compile-real-", async (dir) => {
      const binary = `${dir}/detailclip`;
      const compiled = await run(Deno.execPath(), ["run", "--allow-all", "tools/compile.ts", "--out", binary]);
      assertEquals(compiled.code, 0, describe(compiled));
      await checkBinary(binary, dir);
    });
  },
});

// ---------------------------------------------------------------------------------------------------------------------
// The lookup order, on temp folders

function context(moduleUrl: string, env: Record<string, string>, options: Partial<LookupContext> = {}): LookupContext {
  return { moduleUrl, standalone: false, execPath: "", env: (name) => env[name], ...options };
}

function touch(path: string, text = "library"): void {
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  Deno.writeTextFileSync(path, text);
}

Deno.test("from source: DETAILCLIP_LIB, else native/build/ of the tree; DETAILCLIP_LIB is never second-guessed", async () => {
  await withTempDir("dc-locate-src-", (dir) => {
    const moduleUrl = `file://${dir}/src/torch/lib.ts`;
    const tree = `${dir}/native/build/libdetailclip.so`;
    assertEquals(libraryCandidates(context(moduleUrl, {})), [{ path: tree, origin: "source tree" }]);
    const none = assertThrows(() => locateLibrary(context(moduleUrl, {})), NativeLibraryError, [
      `native library not found at ${tree} (source tree)`,
      "`deno task build`",
      "DETAILCLIP_LIB",
    ]);
    assertEquals(none.message.split("\n").length, 1);
    touch(tree);
    assertEquals(locateLibrary(context(moduleUrl, {})), tree);
    const explicit = `${dir}/elsewhere/libdetailclip.so`;
    const error = assertThrows(
      () => locateLibrary(context(moduleUrl, { DETAILCLIP_LIB: explicit })),
      NativeLibraryError,
      [`${explicit} (DETAILCLIP_LIB)`],
    );
    assert(!error.message.includes(tree), `an explicit DETAILCLIP_LIB is the only place: ${error.message}`);
    touch(explicit);
    assertEquals(locateLibrary(context(moduleUrl, { DETAILCLIP_LIB: explicit })), explicit);
    assertEquals(locateLibrary(context(moduleUrl, { DETAILCLIP_LIB: "" })), tree, "an empty value counts as unset");
  });
});

Deno.test("bundled: beside the bundle first, then native/build/ under the bundle's parent", async () => {
  await withTempDir("dc-locate-bundle-", (dir) => {
    const moduleUrl = `file://${dir}/dist/detailclip.js`;
    const beside = `${dir}/dist/libdetailclip.so`, tree = `${dir}/native/build/libdetailclip.so`;
    assertEquals(libraryCandidates(context(moduleUrl, {})), [
      { path: beside, origin: "beside the bundle" },
      { path: tree, origin: "source tree" },
    ]);
    const error = assertThrows(() => locateLibrary(context(moduleUrl, {})), NativeLibraryError, [
      `${beside} (beside the bundle), ${tree} (source tree)`,
      "beside the bundle",
    ]);
    assertEquals(error.message.split("\n").length, 1);
    touch(tree);
    assertEquals(locateLibrary(context(moduleUrl, {})), tree);
    touch(beside);
    assertEquals(locateLibrary(context(moduleUrl, {})), beside);
  });
});

Deno.test("compiled: beside the binary first, else the embedded copy extracted and verified in the cache", async () => {
  await withTempDir("dc-locate-bin-", async (dir) => {
    // The binary's embedded file system, imitated by a folder: lib.ts and native/build/ at their relative places.
    const moduleUrl = `file://${dir}/vfs/src/torch/lib.ts`;
    const embedded = `${dir}/vfs/native/build/libdetailclip.so`;
    const beside = `${dir}/bin/libdetailclip.so`;
    const env = { XDG_CACHE_HOME: `${dir}/cache`, HOME: `${dir}/home` };
    const binary = context(moduleUrl, env, { standalone: true, execPath: `${dir}/bin/detailclip` });
    assertEquals(libraryCandidates(binary), [
      { path: beside, origin: "beside the binary" },
      { path: embedded, origin: "embedded" },
    ]);
    assertThrows(() => locateLibrary(binary), NativeLibraryError, [`${beside} (beside the binary)`, "(embedded)"]);

    touch(embedded, "embedded library v1");
    const digest = await sha256(embedded);
    const cached = `${dir}/cache/detailclip/${codes.ABI_VERSION}-${digest}/libdetailclip.so`;
    assertEquals(locateLibrary(binary), cached);
    assertEquals(Deno.readTextFileSync(cached), "embedded library v1");
    assert((Deno.statSync(cached).mode! & 0o111) !== 0, "the extracted library is executable");
    const inode = Deno.statSync(cached).ino;
    assertEquals(locateLibrary(binary), cached, "a second start reuses the copy");
    assertEquals(Deno.statSync(cached).ino, inode, "without writing it again");

    Deno.writeTextFileSync(cached, "damaged");
    assertEquals(locateLibrary(binary), cached);
    assertEquals(Deno.readTextFileSync(cached), "embedded library v1", "a damaged copy fails its checksum, rewritten");
    assertEquals([...Deno.readDirSync(cached.slice(0, cached.lastIndexOf("/")))].map((e) => e.name), [
      "libdetailclip.so",
    ], "no temp files");

    // A new version of the binary gets its own folder; the old one is left to the old binary.
    touch(embedded, "embedded library v2");
    const next = locateLibrary(binary);
    assert(next !== cached && Deno.readTextFileSync(cached) === "embedded library v1", next);
    assertEquals(Deno.readTextFileSync(next), "embedded library v2");

    // Without XDG_CACHE_HOME the XDG default under HOME; with neither, or an unwritable one, one line.
    assertEquals(cacheRoot((name) => ({ HOME: "/h" } as Record<string, string>)[name]), "/h/.cache");
    assertEquals(cacheRoot(() => undefined), null);
    const noCache = { ...binary, env: () => undefined };
    assertThrows(() => locateLibrary(noCache), NativeLibraryError, ["XDG_CACHE_HOME", "beside the binary"]);
    touch(`${dir}/file-not-folder`);
    const bad = assertThrows(() => extractLibrary(embedded, `${dir}/file-not-folder`), NativeLibraryError, [
      "cannot extract the embedded native library",
      "XDG_CACHE_HOME",
    ]);
    assertEquals(bad.message.split("\n").length, 1);

    touch(beside);
    assertEquals(locateLibrary(binary), beside, "a library beside the binary wins over the embedded one");
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// libtorch

Deno.test("DETAILCLIP_LIBTORCH: libtorch's files in load order, Debian or wheel names; missing ones named", async () => {
  await withTempDir("dc-libtorch-names-", (dir) => {
    for (const name of ["libtorch.so.1.13", "libtorch_cpu.so.1.13.0", "libtorch_cpu.so.1.13", "libc10.so.1.13"]) {
      touch(`${dir}/debian/${name}`);
    }
    touch(`${dir}/debian/libtorch_python.so.1.13`); // must not be taken for libtorch
    assertEquals(libtorchFiles(`${dir}/debian`), [
      `${dir}/debian/libc10.so.1.13`,
      `${dir}/debian/libtorch_cpu.so.1.13`,
      `${dir}/debian/libtorch.so.1.13`,
    ]);
    for (const name of ["libtorch.so", "libtorch_cuda.so", "libtorch_cpu.so", "libc10_cuda.so", "libc10.so"]) {
      touch(`${dir}/wheel/${name}`);
    }
    assertEquals(
      libtorchFiles(`${dir}/wheel`),
      ["libc10", "libc10_cuda", "libtorch_cpu", "libtorch_cuda", "libtorch"].map((stem) => `${dir}/wheel/${stem}.so`),
    );
    touch(`${dir}/partial/libc10.so`);
    const error = assertThrows(() => libtorchFiles(`${dir}/partial`), NativeLibraryError, [
      `DETAILCLIP_LIBTORCH=${dir}/partial lacks libtorch_cpu.so, libtorch.so`,
    ]);
    assertEquals(error.message.split("\n").length, 1);
    assertThrows(() => libtorchFiles(`${dir}/absent`), NativeLibraryError, ["not a readable folder"]);
  });
});

/** Folders of the libtorch libraries this process has loaded (the real native library is loaded first). */
function loadedLibtorch(): Map<string, string> {
  native();
  const found = new Map<string, string>();
  for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
    const path = line.split(/\s+/)[5] ?? "";
    const stem = /\/(libc10(?:_cuda)?|libtorch(?:_cpu|_cuda)?)\.so[.0-9]*$/.exec(path)?.[1];
    if (stem !== undefined) found.set(stem, path);
  }
  return found;
}

// Decided when the file loads; a library that cannot load leaves the test on, to fail there with the real message.
const systemLibtorch = ((): boolean => {
  try {
    return [...loadedLibtorch().values()].every((path) => path.startsWith("/usr/lib/"));
  } catch {
    return true;
  }
})();

Deno.test({
  name: "DETAILCLIP_LIBTORCH: libtorch is loaded from that folder, not the system's",
  // A wheel's torch/lib needs its neighbours ($ORIGIN), which a copy of three files would lack.
  ignore: !systemLibtorch,
  fn: async () => {
    await withTempDir("dc-libtorch-", async (dir) => {
      for (const path of loadedLibtorch().values()) {
        const copy = `${dir}/${path.slice(path.lastIndexOf("/") + 1)}`;
        try {
          Deno.linkSync(path, copy); // same file system: instant
        } catch {
          Deno.copyFileSync(path, copy);
        }
      }
      const lib = new URL("../src/torch/lib.ts", import.meta.url).href;
      const script = `import { native } from "${lib}"; native();
        const maps = Deno.readTextFileSync("/proc/self/maps").split("\\n").map((l) => l.split(/\\s+/)[5] ?? "");
        console.log(JSON.stringify([...new Set(maps.filter((p) => /\\/lib(c10|torch)[^/]*\\.so/.test(p)))]));`;
      const result = await run(Deno.execPath(), ["eval", "--unstable-ffi", script], { DETAILCLIP_LIBTORCH: dir });
      assertEquals(result.code, 0, describe(result));
      const mapped: string[] = JSON.parse(result.stdout);
      assert(mapped.some((p) => p.startsWith(`${dir}/libtorch_cpu`)), `libtorch_cpu from the folder: ${mapped}`);
      const outside = mapped.filter((p) => !p.startsWith(`${dir}/`) && !p.endsWith("/libdetailclip.so"));
      assertEquals(outside, [], "no libtorch library from elsewhere");
    });
  },
});

Deno.test("a library whose dependency is missing names that file and DETAILCLIP_LIBTORCH", async () => {
  await withTempDir("dc-needs-", async (dir) => {
    Deno.writeTextFileSync(`${dir}/dep.c`, "int dc_dep(void) { return 1; }\n");
    Deno.writeTextFileSync(`${dir}/need.c`, "int dc_dep(void);\nint dc_abi_version(void) { return dc_dep(); }\n");
    const cc = (args: string[]): Promise<Run> => run("cc", args, {}, dir);
    const dep = await cc(["-shared", "-fPIC", "-o", "libdcdep.so", "dep.c"]);
    assertEquals(dep.code, 0, describe(dep));
    const need = await cc(["-shared", "-fPIC", "-o", "libneed.so", "need.c", "-L.", "-ldcdep"]);
    assertEquals(need.code, 0, describe(need));
    await Deno.remove(`${dir}/libdcdep.so`);
    const error = assertThrows(() => openLibrary(`${dir}/libneed.so`), NativeLibraryError, [
      `cannot load native library ${dir}/libneed.so: it needs libdcdep.so`,
      "apt-get install libtorch-dev",
      "DETAILCLIP_LIBTORCH",
    ]);
    assertEquals(error.message.split("\n").length, 1);
  });
});
