// Training's public surface: the options (the CLI's flags as data, with the official defaults) and the train entry.
export { train } from "./loop.ts";
export { NonFiniteLossError, NonFiniteStateError } from "./nonfinite.ts";
export type { TrainSummary } from "./summary.ts";
export {
  OptionError,
  parseTrainOptions,
  type TrainOptions,
  TrainOptionsSchema,
  validate as trainOptions,
} from "./options.ts";
