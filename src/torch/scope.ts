// scope.ts: deterministic lifetimes for tensors. `tidy(fn)` frees every tensor created while fn runs except the
// ones fn returns (found in arrays, plain objects and Maps) and the ones passed to `keep`. Returned tensors move to
// the enclosing scope, so nested tidies compose. Gradient switches (`noGrad`, `inferenceMode`) live here too.
import { native } from "./lib.ts";

/** What a scope needs from a tensor; implemented by Tensor (kept abstract to avoid an import cycle). */
export interface Scoped {
  dispose(): void;
  /** The frame that will free this tensor, or null when its lifetime is manual. */
  scopeFrame: Scoped[] | null;
  /** Called when the tensor leaves all scopes: it then needs the finalizer safety net. */
  unscoped(): void;
}

// A frame is a plain array: pushing is the hot path (one per op). Tensors that were kept, moved to the parent or
// disposed early stay in the array and are skipped at exit (their scopeFrame no longer points at it).
const frames: Scoped[][] = [];

/** Registers a new tensor with the innermost scope; returns false outside scopes. */
export function track(t: Scoped): boolean {
  const frame = frames[frames.length - 1];
  if (frame === undefined) return false;
  frame.push(t);
  t.scopeFrame = frame;
  return true;
}

/** Removes a tensor from every scope: it lives until disposed by hand (parameters, optimizer state). */
export function keep<T extends Scoped>(t: T): T {
  if (t.scopeFrame !== null) {
    t.scopeFrame = null;
    t.unscoped();
  }
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
  const frame: Scoped[] = [];
  frames.push(frame);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    frames.pop();
    release(frame, null);
    throw error;
  }
  frames.pop();
  if (result instanceof Promise) {
    release(frame, null);
    throw new TypeError("tidy: the function returned a Promise; scopes only work with synchronous code");
  }
  const survivors = new Set<Scoped>();
  collect(result, survivors, 0);
  release(frame, survivors);
  return result;
}

function release(frame: Scoped[], survivors: Set<Scoped> | null): void {
  const parent = frames[frames.length - 1] ?? null;
  for (const t of frame) {
    if (t.scopeFrame !== frame) continue;
    if (survivors !== null && survivors.has(t)) {
      if (parent === null) {
        t.scopeFrame = null;
        t.unscoped();
      } else {
        parent.push(t);
        t.scopeFrame = parent;
      }
    } else {
      t.dispose();
    }
  }
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

/** Whether autograd records operations here. */
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
