// train.ts: `deno task train [options]`; with no options, the built-in demo on synthetic captioned shapes.
import { DistError } from "../src/torch/dist.ts";
import { TorchError } from "../src/torch/mod.ts";
import { CheckpointError } from "../src/checkpoint/checkpoint.ts";
import { tieToLauncher } from "../src/train/launcher_link.ts";
import { NonFiniteLossError, NonFiniteStateError, train } from "../src/train/loop.ts";
import { OptionError, parseTrainOptions, trainHelp } from "../src/train/options.ts";
import { UsageError } from "./usage_error.ts";

export async function main(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(trainHelp());
    return 0;
  }
  let options;
  try {
    options = parseTrainOptions(args);
  } catch (error) {
    if (error instanceof OptionError) throw new UsageError(error.message);
    throw error;
  }
  tieToLauncher(); // a rank of `deno task launch` dies with its launcher
  try {
    await train(options);
    return 0;
  } catch (error) {
    if (error instanceof OptionError) throw new UsageError(error.message);
    if (error instanceof NonFiniteLossError || error instanceof NonFiniteStateError) {
      console.error(`detailclip train: ${error.message}`);
      return 3;
    }
    if (error instanceof CheckpointError) {
      console.error(`detailclip train: ${error.message}`);
      return 6;
    }
    // A lost rank, a timeout or mismatched options across ranks: one line, no stack (a collective that fails inside
    // backward arrives wrapped in the TorchError of backward).
    if (error instanceof DistError || (error instanceof TorchError && error.nativeMessage.startsWith("dist "))) {
      console.error(`detailclip train: ${error instanceof TorchError ? error.nativeMessage : error.message}`);
      return 4;
    }
    throw error;
  }
}
