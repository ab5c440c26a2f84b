// module.ts: the Module base. Parameters, buffers and children are registered by name in order, so named
// parameters and state dicts come out with PyTorch's keys and order (own parameters, own buffers, then children).
// A child registered under two names (the iBOT head's shared last layer) appears under both in the state dict but
// once in the parameter list, as in PyTorch.
import { type Device, noGrad, Tensor } from "../torch/mod.ts";

export interface LoadReport {
  missing: string[];
  unexpected: string[];
  mismatched: { name: string; expected: number[]; got: number[] }[];
}

/** A state dict that does not fit a module: missing, unexpected or misshapen keys, all listed. */
export class StateDictError extends Error {
  readonly report: LoadReport;
  constructor(where: string, report: LoadReport) {
    const parts: string[] = [];
    if (report.missing.length) parts.push(`missing ${report.missing.length}: ${preview(report.missing)}`);
    if (report.unexpected.length) parts.push(`unexpected ${report.unexpected.length}: ${preview(report.unexpected)}`);
    if (report.mismatched.length) {
      const shapes = report.mismatched.map((m) => `${m.name} expected [${m.expected}] got [${m.got}]`);
      parts.push(`mis-shaped ${report.mismatched.length}: ${preview(shapes)}`);
    }
    super(`${where}: state dict does not fit the model (${parts.join("; ")})`);
    this.name = "StateDictError";
    this.report = report;
  }
}

function preview(items: string[]): string {
  return items.length <= 6 ? items.join(", ") : `${items.slice(0, 6).join(", ")}, ... (${items.length - 6} more)`;
}

/** Base class of every layer and model: named parameters, buffers, children, state dicts, train/eval mode. */
export abstract class Module {
  readonly #parameters = new Map<string, Tensor>();
  readonly #buffers = new Map<string, Tensor>();
  readonly #children = new Map<string, Module>();
  #training = true;

  /** Registers a parameter (kept out of scopes). trainable=false freezes it (requires_grad off). */
  protected parameter(name: string, value: Tensor, trainable = true): Tensor {
    this.#checkName(name);
    value.keep();
    value.requiresGrad_(trainable);
    this.#parameters.set(name, value);
    return value;
  }

  /** Registers a buffer: state that is saved but never trained (e.g. fixed positional tables). */
  protected buffer(name: string, value: Tensor): Tensor {
    this.#checkName(name);
    value.keep();
    this.#buffers.set(name, value);
    return value;
  }

  protected module<M extends Module>(name: string, child: M): M {
    this.#checkName(name);
    this.#children.set(name, child);
    return child;
  }

  #checkName(name: string): void {
    if (name === "" || name.includes(".")) throw new Error(`invalid member name '${name}'`);
    if (this.#parameters.has(name) || this.#buffers.has(name) || this.#children.has(name)) {
      throw new Error(`${this.constructor.name}: '${name}' is registered twice`);
    }
  }

  /** Every (name, child) pair, recursively, in registration order; a shared child appears under each name. */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.#children) out.push(...child.namedModules(join(prefix, name)));
    return out;
  }

  /** Parameters in PyTorch's order, each tensor once (the first name wins for shared ones). */
  namedParameters(prefix = ""): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    for (const [modulePrefix, module] of this.namedModules(prefix)) {
      for (const [name, value] of module.#parameters) {
        if (seen.has(value)) continue;
        seen.add(value);
        out.push([join(modulePrefix, name), value]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Parameters that require a gradient, with names. */
  namedTrainableParameters(): [string, Tensor][] {
    return this.namedParameters().filter(([, p]) => p.requiresGrad);
  }

  namedBuffers(prefix = ""): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    for (const [modulePrefix, module] of this.namedModules(prefix)) {
      for (const [name, value] of module.#buffers) {
        if (seen.has(value)) continue;
        seen.add(value);
        out.push([join(modulePrefix, name), value]);
      }
    }
    return out;
  }

  /** Every saved tensor by its full key (shared children under each of their names), in PyTorch's order. */
  stateDict(prefix = ""): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [name, value] of this.#parameters) out.set(join(prefix, name), value);
    for (const [name, value] of this.#buffers) out.set(join(prefix, name), value);
    for (const [name, child] of this.#children) {
      for (const [key, value] of child.stateDict(join(prefix, name))) out.set(key, value);
    }
    return out;
  }

  /**
   * Copies values from `state` into this module's tensors (dtype and device converted). Strict mode throws a
   * StateDictError listing every missing, unexpected and mis-shaped key; non-strict loads what fits and returns the
   * same report. Mis-shaped keys are never loaded.
   */
  loadStateDict(state: Map<string, Tensor>, options: { strict?: boolean; where?: string } = {}): LoadReport {
    const { strict = true, where = this.constructor.name } = options;
    const own = this.stateDict();
    const report: LoadReport = { missing: [], unexpected: [], mismatched: [] };
    for (const key of own.keys()) if (!state.has(key)) report.missing.push(key);
    for (const key of state.keys()) if (!own.has(key)) report.unexpected.push(key);
    const loads: [Tensor, Tensor][] = [];
    for (const [key, target] of own) {
      const source = state.get(key);
      if (source === undefined) continue;
      const expected = target.shape;
      const got = source.shape;
      if (expected.length !== got.length || expected.some((d, i) => d !== got[i])) {
        report.mismatched.push({ name: key, expected, got });
      } else {
        loads.push([target, source]);
      }
    }
    const failed = report.missing.length + report.unexpected.length + report.mismatched.length > 0;
    if (strict && failed) throw new StateDictError(where, report);
    noGrad(() => {
      for (const [target, source] of loads) target.copy_(source);
    });
    return report;
  }

  get training(): boolean {
    return this.#training;
  }

  /** Sets training mode here and in every child. */
  train(mode = true): this {
    for (const [, module] of this.namedModules()) module.#training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Turns gradients off for every parameter (teacher copies, frozen embeddings). */
  freeze(): this {
    for (const [, p] of this.namedParameters()) p.requiresGrad_(false);
    return this;
  }

  /** Drops the gradient of every parameter (set to none). */
  zeroGrad(): void {
    for (const [, p] of this.namedParameters()) p.zeroGrad(true);
  }

  numParameters(options: { trainableOnly?: boolean } = {}): number {
    let total = 0;
    for (const [, p] of this.namedParameters()) if (!options.trainableOnly || p.requiresGrad) total += p.numel;
    return total;
  }

  /** Moves every parameter and buffer to `device` in place (the Tensor objects stay; trainability is kept). */
  to(device: Device): this {
    noGrad(() => {
      for (const [, t] of [...this.namedParameters(), ...this.namedBuffers()]) {
        if (t.device === device) continue;
        using detached = t.detach();
        const moved = detached.to({ device });
        if (t.requiresGrad) moved.requiresGrad_(true);
        t.replaceWith_(moved);
      }
    });
    return this;
  }

  /** Frees every parameter and buffer of this module tree. */
  dispose(): void {
    for (const [, p] of this.namedParameters()) p.dispose();
    for (const [, b] of this.namedBuffers()) b.dispose();
  }
}

function join(prefix: string, name: string): string {
  return prefix === "" ? name : `${prefix}.${name}`;
}
