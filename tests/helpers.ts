// helpers.ts: the small assertion vocabulary the foundation tests share. Every comparison reports the worst element
// (index, got, expected) so a failing test says what is wrong without a rerun.
import { liveTensors, NativeLibraryError, Tensor, TorchError } from "../src/torch/mod.ts";

export class AssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AssertionError";
  }
}

export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Structural equality (arrays, plain objects, numbers with Object.is semantics for NaN). */
export function assertEquals(actual: unknown, expected: unknown, message = ""): void {
  const same = (a: unknown, b: unknown): boolean => {
    if (typeof a === "number" && typeof b === "number") return a === b || (Number.isNaN(a) && Number.isNaN(b));
    if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
    if (typeof a === "object" && typeof b === "object" && a !== null && b !== null) {
      const ka = Object.keys(a), kb = Object.keys(b);
      return ka.length === kb.length &&
        ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
    }
    return a === b;
  };
  if (!same(actual, expected)) {
    throw new AssertionError(`${message ? message + ": " : ""}expected ${show(expected)}, got ${show(actual)}`);
  }
}

function show(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? `${v}n` : v));
}

/** |actual - expected| <= atol + rtol * |expected|, elementwise; reports the worst element. */
export function assertClose(
  actual: number | ArrayLike<number>,
  expected: number | ArrayLike<number>,
  options: { atol?: number; rtol?: number; message?: string } = {},
): void {
  const { atol = 1e-6, rtol = 1e-6, message = "" } = options;
  const a = typeof actual === "number" ? [actual] : Array.from(actual);
  const e = typeof expected === "number" ? [expected] : Array.from(expected);
  const prefix = message ? message + ": " : "";
  if (a.length !== e.length) throw new AssertionError(`${prefix}length ${a.length} != expected length ${e.length}`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(e[i]) && Number.isNaN(a[i])) continue;
    if (e[i] === a[i]) continue; // also covers matching infinities
    const excess = Math.abs(a[i] - e[i]) - (atol + rtol * Math.abs(e[i]));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new AssertionError(
      `${prefix}element ${worst} is ${a[worst]}, expected ${e[worst]} (diff ${Math.abs(a[worst] - e[worst])}, ` +
        `atol ${atol}, rtol ${rtol}); got [${a.slice(0, 16).join(", ")}${a.length > 16 ? ", ..." : ""}]`,
    );
  }
}

/** Checks a tensor's shape, dtype (when given) and values (exactly for integer/bool dtypes unless tol given). */
export function assertTensor(
  t: Tensor,
  shape: readonly number[],
  values: ArrayLike<number>,
  options: { dtype?: string; atol?: number; rtol?: number; message?: string } = {},
): void {
  const message = options.message ?? "";
  assertEquals(t.shape, [...shape], `${message} shape`);
  if (options.dtype !== undefined) assertEquals(t.dtype, options.dtype, `${message} dtype`);
  assertClose(t.toArray(), values, { atol: options.atol ?? 0, rtol: options.rtol ?? 0, message });
}

/** Runs fn, expects it to throw an instance of errorClass whose message contains every fragment. */
export function assertThrows<E extends Error>(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  errorClass: new (...args: any[]) => E,
  fragments: readonly string[] = [],
): E {
  let caught: unknown = undefined;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  if (caught === undefined) throw new AssertionError(`expected ${errorClass.name}, nothing was thrown`);
  if (!(caught instanceof errorClass)) {
    throw new AssertionError(`expected ${errorClass.name}, got ${String(caught)}`);
  }
  for (const fragment of fragments) {
    if (!caught.message.includes(fragment)) {
      throw new AssertionError(`message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(fragment)}`);
    }
  }
  return caught;
}

export function assertTorchError(fn: () => unknown, fragments: readonly string[] = []): TorchError {
  return assertThrows(fn, TorchError, fragments);
}

/** A small deterministic PRNG (mulberry32), so test inputs do not depend on libtorch's generator. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [low, high) from a seeded PRNG. */
export function uniformValues(n: number, seed: number, low = -1, high = 1): number[] {
  const next = rng(seed);
  return Array.from({ length: n }, () => low + (high - low) * next());
}

/** erf to ~1e-15: Taylor series below 3, continued fraction for erfc above. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax, sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= -ax * ax / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * sum * 2 / Math.sqrt(Math.PI);
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated from the tail.
  let f = ax;
  for (let k = 60; k >= 1; k--) f = ax + (k / 2) / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const out = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) out[i] = out[i + 1] * shape[i + 1];
  return out;
}

/** The golden reference folder: $DETAILCLIP_GOLDEN, else the copy inside the repository (tests/fixtures/golden/tiny). */
export const GOLDEN_DIR: string = Deno.env.get("DETAILCLIP_GOLDEN") ??
  new URL("./fixtures/golden/tiny", import.meta.url).pathname;

/**
 * Runs Debian's python3 with `args`, `input` as JSON on its stdin, and returns its stdout parsed as JSON; a failure
 * throws naming `what` with Python's stderr. Output is read while the input is written, so neither pipe can fill up.
 */
export async function pythonJson(args: readonly string[], input: unknown, what: string): Promise<unknown> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: [...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const output = child.output();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(input)));
  await writer.close();
  const out = await output;
  if (!out.success) throw new Error(`${what} failed:\n${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Runs fn with console.log and console.error silenced (commands print tables and progress), restoring them after. */
export function quietly<T>(fn: () => T): T {
  const { log, error } = console;
  console.log = () => {};
  console.error = () => {};
  try {
    return fn();
  } finally {
    console.log = log;
    console.error = error;
  }
}

/** Where tools/setup.sh installs timm for tests/export_check.py; absent when the local package index lacked it. */
export const PYLIB_DIR: string = new URL("../.tools/pylib", import.meta.url).pathname;

/** The environment for python3 running tests/export_check.py: .tools/pylib first on PYTHONPATH, so timm is used. */
export function pylibEnv(): Record<string, string> {
  const inherited = Deno.env.get("PYTHONPATH");
  return { PYTHONPATH: inherited ? `${PYLIB_DIR}:${inherited}` : PYLIB_DIR };
}

/** Whether tools/setup.sh installed timm into .tools/pylib. */
export function timmInstalled(): boolean {
  try {
    return Deno.statSync(`${PYLIB_DIR}/timm`).isDirectory;
  } catch {
    return false;
  }
}

/**
 * Why the tests that decode python-written image fixtures cannot run here (the native library does not load, or
 * /usr/bin/python3 lacks PIL or numpy), or null when they can.
 */
export function nativeOrPilMissing(): string | null {
  return nativeMissing() ?? pythonModulesMissing(["PIL", "numpy"]);
}

// ---- tests that need a tool this machine may lack ----------------------------------------------------------------

const REQUIRE_TOOLS = Deno.env.get("DETAILCLIP_REQUIRE_TOOLS") === "1";
const reportedMissing = new Set<string>();

/**
 * Whether the tests that need `what` (a compiler, a Python module, a downloaded file) cannot run here, decided before
 * they are registered, for their `ignore:`; `why` says what is missing, null when nothing is. A test that cannot run
 * is reported as ignored, with one warning line giving the reason, never as passed having asserted nothing. With
 * DETAILCLIP_REQUIRE_TOOLS=1 (CI, which installs every tool) the reason becomes one failing test instead, so a tool
 * lost from CI cannot hide behind ignored tests.
 */
export function missingTool(what: string, why: string | null): boolean {
  if (why === null) return false;
  if (!reportedMissing.has(what)) {
    reportedMissing.add(what);
    if (REQUIRE_TOOLS) {
      Deno.test(`required tool: ${what}`, () => {
        throw new AssertionError(`DETAILCLIP_REQUIRE_TOOLS=1, but the tests that need ${what} cannot run: ${why}`);
      });
    } else {
      console.warn(`ignoring the tests that need ${what}: ${why}`);
    }
  }
  return true;
}

/** Why `command` cannot be run here (not installed, or `command args` fails), or null when it runs. */
export function commandMissing(command: string, args: readonly string[] = ["--version"]): string | null {
  try {
    const result = new Deno.Command(command, { args: [...args], stdout: "null", stderr: "null" }).outputSync();
    return result.success ? null : `\`${[command, ...args].join(" ")}\` failed (exit status ${result.code})`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `${command} is not installed`;
    throw error;
  }
}

/** Why /usr/bin/python3 cannot import every one of `modules`, or null when it can. */
export function pythonModulesMissing(modules: readonly string[]): string | null {
  try {
    const result = new Deno.Command("/usr/bin/python3", {
      args: ["-c", `import ${modules.join(", ")}`],
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (result.success) return null;
    const last = new TextDecoder().decode(result.stderr).trim().split("\n").pop() ?? "import failed";
    return `/usr/bin/python3 cannot import ${modules.join(", ")} (${last})`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "/usr/bin/python3 not found";
    throw error;
  }
}

/** The native library's load error, or null when it loads. */
export function nativeMissing(): string | null {
  try {
    liveTensors();
    return null;
  } catch (error) {
    if (!(error instanceof NativeLibraryError)) throw error;
    return error.message;
  }
}
