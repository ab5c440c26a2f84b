// internal.ts: the tensor layer plus its raw native symbols, for benchmarks and tests that measure the boundary.
export * from "./mod.ts";
export { native } from "./lib.ts";
