// errors_test.ts: failures are typed, actionable and survivable. A libtorch error becomes a TorchError naming the op
// and the shapes; bad vocabulary is a TypeError listing the allowed values; a missing, stale or broken native library
// is one line that says what to do.
import {
  type Device,
  type DType,
  F,
  liveTensors,
  NativeLibraryError,
  Tensor,
  tidy,
  TorchError,
} from "../src/torch/mod.ts";
import { libraryPath, openLibrary } from "../src/torch/lib.ts";
import { codes } from "../src/torch/symbols.ts";
import { assert, assertEquals, assertThrows, assertTorchError } from "./helpers.ts";

/** No libtorch C++ backtrace or internal frames in a message. */
function assertNoCppTrace(text: string): void {
  for (const marker of ["Exception raised from", "frame #", "c10::", "libc10", "libtorch", ".cpp:"]) {
    assert(!text.includes(marker), `C++ trace marker ${JSON.stringify(marker)} in: ${text}`);
  }
}

Deno.test("a shape error is a TorchError naming the op and both shapes, and the process keeps working", () => {
  const before = liveTensors();
  tidy(() => {
    const a = Tensor.ones([2, 3]), b = Tensor.ones([4, 5]);
    const error = assertTorchError(() => a.matmul(b), ["matmul", "[2, 3]", "[4, 5]"]);
    assertEquals(error.op, "matmul");
    assertEquals(error.shapes, [[2, 3], [4, 5]]);
    assert(error.nativeMessage.length > 0, "the native message is kept");
    assertEquals(error.name, "TorchError");
    assertNoCppTrace(error.message);
    assertEquals(error.message.split("\n").length, 1, "one line");
    // the library still works, and the failure made no handle
    assertEquals(liveTensors(), before + 2);
    assertEquals(a.matmul(Tensor.ones([3, 2])).toArray(), [3, 3, 3, 3]);
  });
  assertEquals(liveTensors(), before);
});

Deno.test("errors of other op families name their op and carry libtorch's reason", () => {
  const before = liveTensors();
  tidy(() => {
    const x = Tensor.ones([2, 3]);
    assertTorchError(() => x.reshape([4, 2]), ["reshape", "[2, 3]", "[4, 2]"]);
    assertTorchError(() => x.select(0, 5), ["select", "[2, 3]", "out of range"]);
    assertTorchError(() => x.add(Tensor.ones([4])), ["add", "[2, 3]", "[4]"]);
    assertTorchError(() => x.sum(5), ["sum", "[2, 3]"]);
    assertTorchError(() => x.chunk(2, 4), ["chunk", "[2, 3]"]);
    assertTorchError(() => x.sort(3), ["sort"]);
    assertTorchError(() => F.linear(x, Tensor.ones([4, 2])), ["linear", "[2, 3]", "[4, 2]"]);
    assertTorchError(() => F.conv2d(x, Tensor.ones([1, 1, 1, 1])), ["conv2d"]);
    assertTorchError(() => F.interpolate(x, [4, 4]), ["interpolate", "4-D"]);
    assertTorchError(() => F.crossEntropy(x, Tensor.fromArray([0, 5], [2], { dtype: "int64" })), ["cross_entropy"]);
    assertTorchError(() => x.mul(2).backward(), ["backward"]);
    assertTorchError(() => Tensor.zeros([-1]), ["zeros"]);
    assertTorchError(() => x.size(2), ["size", "out of range"]);
    // each failure replaces the last message: a later error does not repeat an earlier one
    const first = assertTorchError(() => x.reshape([7]));
    const second = assertTorchError(() => x.select(1, 9));
    assert(first.nativeMessage !== second.nativeMessage, "stale native message");
    assert(second.nativeMessage.includes("9"), second.nativeMessage);
  });
  assertEquals(liveTensors(), before);
});

Deno.test("bad dtype and device strings are TypeErrors that list the allowed values", () => {
  const before = liveTensors();
  const dtypeError = assertThrows(() => Tensor.zeros([2], { dtype: "float128" as DType }), TypeError, [
    "float128",
    "float32",
    "bfloat16",
    "int64",
    "bool",
  ]);
  assert(!(dtypeError instanceof TorchError));
  tidy(() => assertThrows(() => Tensor.ones([1]).to({ dtype: "half" as DType }), TypeError, ["half", "float16"]));
  assertThrows(() => Tensor.zeros([2], { device: "tpu" as Device }), TypeError, ["tpu", "cpu", "cuda", "cuda:N"]);
  assertThrows(() => Tensor.zeros([2], { device: "cuda:x" as Device }), TypeError, ["cuda:x", "cuda:N"]);
  tidy(() => assertThrows(() => F.softmax(Tensor.ones([1]), 0, "double" as DType), TypeError, ["double", "float64"]));
  assertEquals(liveTensors(), before);
});

/** Runs `deno eval` with the given environment and returns its exit code and stderr (without colours). */
function denoEval(code: string, env: Record<string, string>): { code: number; stderr: string } {
  const result = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--unstable-ffi", code],
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  // deno-lint-ignore no-control-regex
  const stderr = new TextDecoder().decode(result.stderr).replace(/\x1b\[[0-9;]*m/g, "");
  return { code: result.code, stderr };
}

Deno.test("a missing native library is one line naming the path and `deno task build`, without a C++ trace", () => {
  const mod = new URL("../src/torch/mod.ts", import.meta.url).href;
  const { code, stderr } = denoEval(`import { torchVersion } from "${mod}"; torchVersion();`, {
    DETAILCLIP_LIB: "/nonexistent/lib.so",
  });
  assert(code !== 0, "the process fails");
  // Deno prints the uncaught error's message on the `error:` line, then the JS stack and the cause.
  const lines = stderr.split("\n").filter((line) => line.startsWith("error:"));
  assertEquals(lines.length, 1, `one error line in:\n${stderr}`);
  const line = lines[0];
  for (
    const fragment of ["NativeLibraryError", "native library not found", "/nonexistent/lib.so", "`deno task build`"]
  ) {
    assert(line.includes(fragment), `error line lacks ${JSON.stringify(fragment)}: ${line}`);
  }
  assertNoCppTrace(stderr);
  // the same in process: one line, the typed error
  const error = assertThrows(() => openLibrary("/nonexistent/lib.so"), NativeLibraryError, [
    "native library not found at /nonexistent/lib.so",
    "`deno task build`",
    "DETAILCLIP_LIB",
  ]);
  assertEquals(error.message.split("\n").length, 1);
});

/** Compiles a C source into a shared library in a temp dir (null when there is no C compiler). */
function compileLibrary(dir: string, source: string): string | null {
  const c = `${dir}/fake.c`, so = `${dir}/libfake.so`;
  Deno.writeTextFileSync(c, source);
  let result: Deno.CommandOutput;
  try {
    result = new Deno.Command("cc", { args: ["-shared", "-fPIC", "-o", so, c], stderr: "piped" }).outputSync();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
  if (!result.success) throw new Error(`cc failed: ${new TextDecoder().decode(result.stderr)}`);
  return so;
}

Deno.test("an ABI-mismatched library names both versions and says to rebuild", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc-abi-" });
  try {
    const so = compileLibrary(dir, "int dc_abi_version(void) { return 9999; }\n");
    assert(so !== null, "a C compiler (cc) is needed for this test");
    const error = assertThrows(() => openLibrary(so), NativeLibraryError, [
      so,
      "ABI version 9999",
      `needs ${codes.ABI_VERSION}`,
      "rebuild",
      "`deno task build`",
    ]);
    assertEquals(error.message.split("\n").length, 1);
    assertNoCppTrace(error.message);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a library with the right ABI version but missing symbols cannot be loaded", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc-abi-" });
  try {
    const so = compileLibrary(dir, `int dc_abi_version(void) { return ${codes.ABI_VERSION}; }\n`);
    assert(so !== null, "a C compiler (cc) is needed for this test");
    const error = assertThrows(() => openLibrary(so), NativeLibraryError, [
      "cannot load native library",
      so,
      "rebuild",
    ]);
    assertEquals(error.message.split("\n").length, 1);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("an unloadable file (text named .so) gives the 'cannot load' message", () => {
  const dir = Deno.makeTempDirSync({ prefix: "dc-bad-" });
  try {
    const path = `${dir}/libdetailclip.so`;
    Deno.writeTextFileSync(path, "this is not an ELF file\n");
    const error = assertThrows(() => openLibrary(path), NativeLibraryError, [
      "cannot load native library",
      path,
      "`deno task build`",
      "libtorch",
    ]);
    assertEquals(error.message.split("\n").length, 1);
    assert(error.cause !== undefined, "the loader's error is kept as the cause");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the real library opens and reports the expected ABI version", () => {
  const library = openLibrary(libraryPath());
  try {
    assertEquals(library.symbols.dc_abi_version(), codes.ABI_VERSION);
  } finally {
    library.close();
  }
});
