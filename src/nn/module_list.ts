// module_list.ts: torch.nn.ModuleList. Children are registered as "0", "1", ..., so state-dict keys read
// `blocks.3.attn.qkv.weight` exactly as PyTorch's (nn.Sequential uses the same names).
import { Module } from "./module.ts";

export class ModuleList<M extends Module> extends Module implements Iterable<M> {
  readonly #items: M[];

  constructor(items: readonly M[]) {
    super();
    this.#items = [...items];
    this.#items.forEach((item, i) => this.module(String(i), item));
  }

  get length(): number {
    return this.#items.length;
  }

  /** The i-th child; negative i counts from the end. */
  at(i: number): M {
    const item = this.#items.at(i);
    if (item === undefined) throw new RangeError(`ModuleList: index ${i} out of range for length ${this.length}`);
    return item;
  }

  [Symbol.iterator](): Iterator<M> {
    return this.#items[Symbol.iterator]();
  }
}
