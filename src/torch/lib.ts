// lib.ts: finds libdetailclip.so, opens it once, and checks that its ABI is the one symbols.ts was generated from.
// Location: $DETAILCLIP_LIB, else native/build/libdetailclip.so relative to this module. Failures are one line that
// says what to do, with the loader's message attached as the cause.
import { codes, symbols } from "./symbols.ts";

export const defaultLibraryPath: string = new URL("../../native/build/libdetailclip.so", import.meta.url).pathname;

/** Raised when the native library cannot be used at all (missing, unloadable, wrong ABI). */
export class NativeLibraryError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NativeLibraryError";
  }
}

export type NativeSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let loaded: Deno.DynamicLibrary<typeof symbols> | null = null;

export function libraryPath(): string {
  return Deno.env.get("DETAILCLIP_LIB") ?? defaultLibraryPath;
}

/**
 * libgomp reads its settings once, when libtorch is loaded. Its default (spinning) wait policy turns every small op
 * into a busy-wait whenever the other cores are taken, which made a tiny training step 25x slower on a shared
 * 2-core machine; PASSIVE costs nothing measurable when the cores are free. A user's own setting wins.
 */
function prepareThreadingEnvironment(): void {
  if (Deno.env.get("OMP_WAIT_POLICY") === undefined) Deno.env.set("OMP_WAIT_POLICY", "PASSIVE");
}

/** Opens a library file and checks its ABI version. Exported for tests of the failure messages. */
export function openLibrary(path: string): Deno.DynamicLibrary<typeof symbols> {
  prepareThreadingEnvironment();
  let library: Deno.DynamicLibrary<typeof symbols>;
  try {
    Deno.statSync(path);
  } catch (cause) {
    throw new NativeLibraryError(
      `detailclip: native library not found at ${path}; build it with \`deno task build\` (or set DETAILCLIP_LIB)`,
      { cause },
    );
  }
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
