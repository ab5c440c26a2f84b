// scope.ts: deterministic lifetimes for tensors. `tidy(fn)` frees every tensor created while fn runs except the
// ones fn returns (found in arrays, plain objects and Maps) and the ones passed to `keep`. Returned tensors move to
// the enclosing scope, so nested tidies compose. Gradient switches (`noGrad`, `inferenceMode`) live here too.
import { native } from "./lib.ts";

/** What a scope needs from a tensor; implemented by Tensor (kept abstract to avoid an import cycle). */
export interface Scoped {
  dispose(): void;
  scopeFrame: Set<Scoped> | null;
}

const frames: Set<Scoped>[] = [];

/** Registers a new tensor with the innermost scope (no-op outside scopes). */
export function track(t: Scoped): void {
  const frame = frames[frames.length - 1];
  if (frame !== undefined) {
    frame.add(t);
    t.scopeFrame = frame;
  }
}

/** Removes a tensor from every scope: it lives until disposed by hand (parameters, optimizer state). */
export function keep<T extends Scoped>(t: T): T {
  t.scopeFrame?.delete(t);
  t.scopeFrame = null;
  return t;
}

function isScoped(value: unknown): value is Scoped {
  return typeof value === "object" && value !== null && "scopeFrame" in value && "dispose" in value;
}

function collect(value: unknown, out: Set<Scoped>, depth: number): void {
  if (depth > 8 || typeof value !== "object" || value === null) return;
  if (isScoped(value)) {
    out.add(value);
  } else if (Array.isArray(value)) {
    for (const item of value) collect(item, out, depth + 1);
  } else if (value instanceof Map) {
    for (const item of value.values()) collect(item, out, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const item of Object.values(value)) collect(item, out, depth + 1);
  }
}

/** Runs fn in a new scope and frees what it created, except what it returns. fn must be synchronous. */
export function tidy<T>(fn: () => T): T {
  const frame = new Set<Scoped>();
  frames.push(frame);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    frames.pop();
    for (const t of frame) t.dispose();
    throw error;
  }
  frames.pop();
  if (result instanceof Promise) {
    for (const t of frame) t.dispose();
    throw new TypeError("tidy: the function returned a Promise; scopes only work with synchronous code");
  }
  const survivors = new Set<Scoped>();
  collect(result, survivors, 0);
  const parent = frames[frames.length - 1] ?? null;
  for (const t of frame) {
    if (survivors.has(t)) {
      t.scopeFrame = parent;
      parent?.add(t);
    } else {
      t.dispose();
    }
  }
  return result;
}

/** Runs fn with gradient recording off, restoring the previous mode afterwards. */
export function noGrad<T>(fn: () => T): T {
  const previous = native().dc_set_grad_enabled(0);
  try {
    return fn();
  } finally {
    native().dc_set_grad_enabled(previous);
  }
}

/** Runs fn with gradient recording on (inside a noGrad region, for example). */
export function enableGrad<T>(fn: () => T): T {
  const previous = native().dc_set_grad_enabled(1);
  try {
    return fn();
  } finally {
    native().dc_set_grad_enabled(previous);
  }
}

export function isGradEnabled(): boolean {
  return native().dc_is_grad_enabled() === 1;
}

/** Runs fn in libtorch's inference mode: no autograd bookkeeping at all (tensors made here never need grad). */
export function inferenceMode<T>(fn: () => T): T {
  const guard = native().dc_inference_mode_enter();
  if (guard === null) throw new Error("inference_mode_enter failed");
  try {
    return fn();
  } finally {
    native().dc_inference_mode_exit(guard);
  }
}
