// train.ts: `deno task train [options]`; with no options, the built-in demo on synthetic captioned shapes. Failures
// (bad options, a non-finite loss, a lost rank, a full disk, ...) go to the boundary of cli/errors.ts.
import { tieToLauncher } from "../src/train/launcher_link.ts";
import { train } from "../src/train/loop.ts";
import { parseTrainOptions, trainHelp } from "../src/train/options.ts";
import { preflightTrain } from "./train_preflight.ts";

export async function main(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(trainHelp());
    return 0;
  }
  const options = parseTrainOptions(args);
  tieToLauncher(); // a rank of `deno task launch` dies with its launcher, and writes nothing once it is gone
  preflightTrain(options);
  await train(options);
  return 0;
}
