// errors.ts: the typed error of a failed tensor operation. It names the op and the shapes of its tensor
// arguments, so the message is actionable without a C++ backtrace (which the native side never returns).

/** An error from libtorch, naming the op and the shapes of its arguments. */
export class TorchError extends Error {
  readonly op: string;
  readonly shapes: readonly (readonly number[])[];
  readonly nativeMessage: string;

  constructor(op: string, shapes: readonly (readonly number[])[], nativeMessage: string) {
    const args = shapes.map((s) => `[${s.join(", ")}]`).join(", ");
    super(`${op}(${args}): ${nativeMessage.trim() || "unknown native error"}`);
    this.name = "TorchError";
    this.op = op;
    this.shapes = shapes;
    this.nativeMessage = nativeMessage;
  }
}
