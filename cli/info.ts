// info.ts: `deno task info --model NAME` prints one JSON line with the model's parameter counts. The model is
// built on the meta device, so even ViT-L costs no memory and no initialisation time.
import { parseArgs } from "node:util";
import { buildPreset } from "../src/models/build.ts";
import { presetNames } from "../src/models/configs.ts";
import { withDefaultDevice } from "../src/torch/mod.ts";
import { UsageError } from "./usage_error.ts";

const help = `usage: deno task info --model NAME

Prints {"model", "total_params", "trainable_params"} as one JSON line.
models: ${presetNames().join(", ")}`;

export function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { model: { type: "string" }, help: { type: "boolean", short: "h" } },
    strict: true,
  });
  if (values.help) {
    console.log(help);
    return Promise.resolve(0);
  }
  if (!values.model) throw new UsageError(`--model is required (one of ${presetNames().join(", ")})`);
  if (!presetNames().includes(values.model)) {
    throw new UsageError(`--model: unknown model '${values.model}' (one of ${presetNames().join(", ")})`);
  }
  const model = withDefaultDevice("meta", () => buildPreset(values.model!));
  const report = {
    model: values.model,
    total_params: model.numParameters(),
    trainable_params: model.numParameters({ trainableOnly: true }),
  };
  model.dispose();
  console.log(JSON.stringify(report));
  return Promise.resolve(0);
}
