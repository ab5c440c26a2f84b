// Training's public surface: the options (the CLI's flags as data, with the official defaults) and the train entry.
export { NonFiniteLossError, NonFiniteStateError, train, type TrainSummary } from "./loop.ts";
export {
  OptionError,
  parseTrainOptions,
  type TrainOptions,
  TrainOptionsSchema,
  validate as trainOptions,
} from "./options.ts";
