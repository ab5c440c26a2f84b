// lib.ts: finds libdetailclip.so, opens it once, and checks that its ABI is the one symbols.ts was generated from.
// The same code runs from the source tree, from the esbuild bundle (dist/detailclip.js) and inside the `deno compile`
// binary, so the library is looked for in this order (the first file that exists wins):
//   1. $DETAILCLIP_LIB, when set (then nowhere else: an explicit choice must not be silently replaced);
//   2. beside the running file: next to the bundle, or next to the compiled binary;
//   3. the source tree: native/build/ (relative to src/torch/ from source, to the bundle's parent from dist/);
//   4. in the compiled binary, the copy embedded with `--include`, extracted (dlopen needs a real file) into a
//      per-version cache folder $XDG_CACHE_HOME/detailclip/<abi>-<sha256>/ and verified by its checksum.
// libtorch comes from the loader's path, or from $DETAILCLIP_LIBTORCH: a running process cannot change its own
// LD_LIBRARY_PATH, so that folder's libraries are dlopen'ed first (RTLD_GLOBAL), and the library's own references to
// them then resolve to the copies already loaded. Failures are one line that says what is missing and what to do.
import { createHash } from "node:crypto";
import { codes, symbols } from "./symbols.ts";

/** The library's file name, wherever it is looked for. */
export const LIBRARY_FILE = "libdetailclip.so";

/** Raised when the native library cannot be used at all (missing, unloadable, wrong ABI). */
export class NativeLibraryError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NativeLibraryError";
  }
}

export type NativeSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let loaded: Deno.DynamicLibrary<typeof symbols> | null = null;

/** How this code is running; it decides where "beside the running file" and "the source tree" are. */
export type RunForm = "source" | "bundle" | "binary";

/** Why a path is looked at; shown in the not-found message. */
export type LibraryOrigin = "DETAILCLIP_LIB" | "beside the bundle" | "beside the binary" | "source tree" | "embedded";

export interface LibraryCandidate {
  path: string;
  origin: LibraryOrigin;
}

/** Everything the lookup depends on, so tests can describe a bundle or a binary without building one. */
export interface LookupContext {
  /** import.meta.url of this module: src/torch/lib.ts from source or in the binary, the bundle file when bundled. */
  moduleUrl: string;
  /** Deno.build.standalone: true inside a `deno compile` binary. */
  standalone: boolean;
  /** Deno.execPath(): the binary itself when standalone (unused otherwise). */
  execPath: string;
  env: (name: string) => string | undefined;
}

export function currentContext(): LookupContext {
  return {
    moduleUrl: import.meta.url,
    standalone: Deno.build.standalone,
    // Only the binary needs it, and reading it needs a read permission that an importer may not have granted.
    execPath: Deno.build.standalone ? Deno.execPath() : "",
    env: (name) => Deno.env.get(name),
  };
}

export function runForm(context: LookupContext): RunForm {
  if (context.standalone) return "binary";
  // esbuild inlines this module, so import.meta.url is then the bundle's own URL.
  return new URL(context.moduleUrl).pathname.endsWith("/src/torch/lib.ts") ? "source" : "bundle";
}

function dirname(path: string): string {
  const cut = path.lastIndexOf("/");
  return cut <= 0 ? "/" : path.slice(0, cut);
}

/** The places to look, in order (see the header). */
export function libraryCandidates(context: LookupContext): LibraryCandidate[] {
  const explicit = context.env("DETAILCLIP_LIB");
  if (explicit !== undefined && explicit !== "") return [{ path: explicit, origin: "DETAILCLIP_LIB" }];
  // decodeURIComponent: a URL's pathname keeps %20 and friends, a file path must not.
  const sourceTree = (relative: string): string => decodeURIComponent(new URL(relative, context.moduleUrl).pathname);
  switch (runForm(context)) {
    case "source":
      return [{ path: sourceTree(`../../native/build/${LIBRARY_FILE}`), origin: "source tree" }];
    case "bundle":
      return [
        { path: sourceTree(LIBRARY_FILE), origin: "beside the bundle" },
        { path: sourceTree(`../native/build/${LIBRARY_FILE}`), origin: "source tree" },
      ];
    case "binary":
      // `deno compile --include native/build/libdetailclip.so` keeps the file at its place relative to this module
      // inside the binary's embedded file system, which Deno's file APIs (not dlopen) can read.
      return [
        { path: `${dirname(context.execPath)}/${LIBRARY_FILE}`, origin: "beside the binary" },
        { path: sourceTree(`../../native/build/${LIBRARY_FILE}`), origin: "embedded" },
      ];
  }
}

/** The source-tree location of the library for the current run form (kept for callers that print it). */
export const defaultLibraryPath: string = libraryCandidates({ ...currentContext(), env: () => undefined }).at(-1)!.path;

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function fileSha256(path: string): string | null {
  try {
    return sha256(Deno.readFileSync(path));
  } catch {
    return null;
  }
}

/** $XDG_CACHE_HOME, else ~/.cache (the XDG default); null when neither can be known. */
export function cacheRoot(env: (name: string) => string | undefined): string | null {
  const xdg = env("XDG_CACHE_HOME");
  if (xdg !== undefined && xdg.startsWith("/")) return xdg;
  const home = env("HOME");
  return home !== undefined && home !== "" ? `${home}/.cache` : null;
}

/**
 * Copies the library at `source` (the binary's embedded copy) to `<root>/detailclip/<abi>-<sha256>/libdetailclip.so`
 * unless a copy with the same checksum is already there, and returns that path. The folder name changes with the
 * library's content, so two versions of the binary never share a file. The copy is written to a temporary name,
 * synced and renamed, so a concurrent start or a crash never leaves a partial file under the final name; a damaged
 * copy fails the checksum and is written again.
 */
export function extractLibrary(source: string, root: string): string {
  const bytes = Deno.readFileSync(source);
  const digest = sha256(bytes);
  const folder = `${root}/detailclip/${codes.ABI_VERSION}-${digest}`;
  const target = `${folder}/${LIBRARY_FILE}`;
  if (fileSha256(target) === digest) return target;
  const temporary = `${folder}/.${LIBRARY_FILE}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    Deno.mkdirSync(folder, { recursive: true });
    const file = Deno.openSync(temporary, { write: true, createNew: true, mode: 0o755 });
    try {
      for (let written = 0; written < bytes.length;) written += file.writeSync(bytes.subarray(written));
      file.syncSync();
    } finally {
      file.close();
    }
    Deno.renameSync(temporary, target);
  } catch (cause) {
    try {
      Deno.removeSync(temporary);
    } catch { /* never created, or already renamed */ }
    const reason = cause instanceof Error ? cause.message.split("\n")[0] : String(cause);
    throw new NativeLibraryError(
      `detailclip: cannot extract the embedded native library to ${folder} (${reason}); set XDG_CACHE_HOME to a ` +
        `writable folder or put ${LIBRARY_FILE} beside the binary`,
      { cause },
    );
  }
  const written = fileSha256(target);
  if (written !== digest) {
    throw new NativeLibraryError(
      `detailclip: the extracted native library ${target} has checksum ${written} instead of ${digest}; ` +
        "remove that folder and run again",
    );
  }
  return target;
}

/** The library to open: the first candidate that exists (the embedded one extracted first). */
export function locateLibrary(context: LookupContext = currentContext()): string {
  const candidates = libraryCandidates(context);
  for (const candidate of candidates) {
    if (!isFile(candidate.path)) continue;
    if (candidate.origin !== "embedded") return candidate.path;
    const root = cacheRoot(context.env);
    if (root === null) {
      throw new NativeLibraryError(
        `detailclip: no cache folder to extract the embedded native library into (neither XDG_CACHE_HOME nor HOME ` +
          `is set); set XDG_CACHE_HOME or put ${LIBRARY_FILE} beside the binary`,
      );
    }
    return extractLibrary(candidate.path, root);
  }
  const where = candidates.map((c) => `${c.path} (${c.origin})`).join(", ");
  const place = runForm(context) === "source" ? "" : `, put ${LIBRARY_FILE} beside the ${runForm(context)}`;
  throw new NativeLibraryError(
    `detailclip: native library not found at ${where}; build it with \`deno task build\`${place} (or set ` +
      "DETAILCLIP_LIB to its path)",
  );
}

/** The path of the native library this process loads (DETAILCLIP_LIB, else native/build). */
export function libraryPath(): string {
  return locateLibrary();
}

/** libtorch's libraries in load order (each needs the ones before it); CUDA ones exist only in a CUDA build. */
const LIBTORCH_PARTS: readonly { stem: string; required: boolean }[] = [
  { stem: "libc10", required: true },
  { stem: "libc10_cuda", required: false },
  { stem: "libtorch_cpu", required: true },
  { stem: "libtorch_cuda", required: false },
  { stem: "libtorch", required: true },
];

/**
 * The files of libtorch in `folder`, in load order: `<stem>.so` (a PyTorch wheel's torch/lib) or else the shortest
 * `<stem>.so.<version>` (Debian's libtorch1.13 names). A missing required part is an error naming it.
 */
export function libtorchFiles(folder: string): string[] {
  let names: string[];
  try {
    names = [...Deno.readDirSync(folder)].filter((entry) => !entry.isDirectory).map((entry) => entry.name);
  } catch (cause) {
    throw new NativeLibraryError(`detailclip: DETAILCLIP_LIBTORCH=${folder} is not a readable folder`, { cause });
  }
  const files: string[] = [], missing: string[] = [];
  for (const { stem, required } of LIBTORCH_PARTS) {
    const versioned = new RegExp(`^${stem}\\.so\\.[0-9][0-9.]*$`);
    const match = names.includes(`${stem}.so`)
      ? `${stem}.so`
      : names.filter((name) => versioned.test(name)).sort((a, b) => a.length - b.length)[0];
    if (match !== undefined) files.push(`${folder}/${match}`);
    else if (required) missing.push(`${stem}.so`);
  }
  if (missing.length > 0) {
    throw new NativeLibraryError(
      `detailclip: DETAILCLIP_LIBTORCH=${folder} lacks ${missing.join(", ")}; point it at the folder that holds ` +
        "libtorch's libraries (a CUDA PyTorch's torch/lib, or unset it to use the system's libtorch)",
    );
  }
  return files;
}

const RTLD_NOW = 0x2, RTLD_GLOBAL = 0x100;
let libtorchPreloaded = false;

/** dlopen's libtorch from $DETAILCLIP_LIBTORCH (once per process) through libc, so that RTLD_GLOBAL can be asked. */
function preloadLibtorch(): void {
  const folder = Deno.env.get("DETAILCLIP_LIBTORCH");
  if (libtorchPreloaded || folder === undefined || folder === "") return;
  const files = libtorchFiles(folder);
  const libc = Deno.dlopen("libc.so.6", {
    dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
    dlerror: { parameters: [], result: "pointer" },
  });
  try {
    for (const file of files) {
      // The handles are never closed: these libraries stay for the life of the process.
      if (libc.symbols.dlopen(new TextEncoder().encode(file + "\0"), RTLD_NOW | RTLD_GLOBAL) !== null) continue;
      const message = libc.symbols.dlerror();
      const reason = message === null ? "unknown error" : Deno.UnsafePointerView.getCString(message);
      throw new NativeLibraryError(`detailclip: cannot load ${file} from DETAILCLIP_LIBTORCH (${reason})`);
    }
  } finally {
    libc.close();
  }
  libtorchPreloaded = true;
}

/**
 * The loader's "cannot open shared object file" names the missing file: the library itself (handled before) or one
 * it needs. Returns the needed file's name when it is a dependency that is missing.
 */
export function missingDependency(loaderMessage: string, path: string): string | null {
  const match = /([^\s:]+): cannot open shared object file/.exec(loaderMessage);
  if (match === null || match[1] === path) return null;
  return match[1];
}

/**
 * libgomp reads its settings once, when libtorch is loaded. Its default (spinning) wait policy turns every small op
 * into a busy-wait whenever the other cores are taken, which made a tiny training step 25x slower on a shared
 * 2-core machine; PASSIVE costs nothing measurable when the cores are free. A user's own setting wins.
 */
function prepareThreadingEnvironment(): void {
  if (Deno.env.get("OMP_WAIT_POLICY") === undefined) Deno.env.set("OMP_WAIT_POLICY", "PASSIVE");
}

// mallopt parameters (malloc.h).
const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;
/** glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); mallopt refuses more. */
const MMAP_THRESHOLD_MAX = 32 * 1024 * 1024;
const TRIM_THRESHOLD = 1024 * 1024 * 1024;
let mallocTuned = false;

/**
 * Keeps freed tensor memory in the process. glibc's defaults hand big freed blocks back to the kernel (mmap'd ones at
 * once, the heap's top above 128 KiB–32 MiB), so every training step page-faults thousands of fresh zero pages for
 * its activations: 3,000–8,000 a step at the golden dims, 115 → 100 ms once they stop (README, bench:step). Blocks
 * under 32 MiB come from the heap and up to 1 GiB of free heap is kept for the next step. Applied once, before
 * libtorch allocates; DETAILCLIP_MALLOC=default (or the user's own GLIBC_TUNABLES / MALLOC_* settings) leaves glibc
 * as it is. Not glibc (musl): nothing to tune, nothing done.
 */
function tuneMalloc(): void {
  if (mallocTuned) return;
  mallocTuned = true;
  if (Deno.env.get("DETAILCLIP_MALLOC") === "default" || Deno.env.get("GLIBC_TUNABLES") !== undefined) return;
  if (Deno.env.get("MALLOC_TRIM_THRESHOLD_") !== undefined || Deno.env.get("MALLOC_MMAP_THRESHOLD_") !== undefined) {
    return;
  }
  let libc;
  try {
    libc = Deno.dlopen("libc.so.6", { mallopt: { parameters: ["i32", "i32"], result: "i32" } });
  } catch {
    return;
  }
  try {
    // Setting either also turns off glibc's sliding threshold, which otherwise grows only after frees.
    libc.symbols.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
    libc.symbols.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
  } finally {
    libc.close();
  }
}

/** Opens a library file and checks its ABI version. Exported for tests of the failure messages. */
export function openLibrary(path: string): Deno.DynamicLibrary<typeof symbols> {
  prepareThreadingEnvironment();
  tuneMalloc();
  let library: Deno.DynamicLibrary<typeof symbols>;
  try {
    Deno.statSync(path);
  } catch (cause) {
    throw new NativeLibraryError(
      `detailclip: native library not found at ${path}; build it with \`deno task build\` (or set DETAILCLIP_LIB)`,
      { cause },
    );
  }
  preloadLibtorch();
  try {
    // The ABI version is read through a minimal table first: an old library may lack newer symbols.
    const probe = Deno.dlopen(path, { dc_abi_version: symbols.dc_abi_version });
    const version = probe.symbols.dc_abi_version();
    probe.close();
    if (version !== codes.ABI_VERSION) {
      throw new NativeLibraryError(
        `detailclip: native library ${path} has ABI version ${version} but this code needs ${codes.ABI_VERSION}; ` +
          "rebuild it with `deno task build`",
      );
    }
    library = Deno.dlopen(path, symbols);
  } catch (cause) {
    if (cause instanceof NativeLibraryError) throw cause;
    const reason = cause instanceof Error ? cause.message.split("\n")[0] : String(cause);
    const dependency = missingDependency(reason, path);
    if (dependency !== null) {
      const where = Deno.env.get("DETAILCLIP_LIBTORCH");
      throw new NativeLibraryError(
        `detailclip: cannot load native library ${path}: it needs ${dependency}, which is not on the loader's path` +
          (where ? ` nor in DETAILCLIP_LIBTORCH=${where}` : "") + "; install libtorch (apt-get install libtorch-dev) " +
          `or set DETAILCLIP_LIBTORCH to the folder holding ${dependency} (e.g. a CUDA PyTorch's torch/lib)`,
        { cause },
      );
    }
    throw new NativeLibraryError(
      `detailclip: cannot load native library ${path} (${reason}); rebuild it with \`deno task build\` ` +
        "and check that libtorch is installed (apt-get install libtorch-dev)",
      { cause },
    );
  }
  return library;
}

/** The native symbols, loading the library on first use. */
export function native(): NativeSymbols {
  if (loaded === null) loaded = openLibrary(libraryPath());
  return loaded.symbols;
}

/** The message of the last failed native call on this thread. */
export function lastError(): string {
  const pointer = native().dc_last_error();
  return pointer === null ? "" : Deno.UnsafePointerView.getCString(pointer);
}
