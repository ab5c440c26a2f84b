// detailclip: the public library API. Only re-exports.
export * from "./src/torch/mod.ts";
