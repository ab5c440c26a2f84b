// The data layer's public surface for library users: the CLIP tokenizer (OpenAI's vocabulary or a learned one), the
// synthetic shapes data set, and image decoding.
export {
  BpeFileError,
  ClipTokenizer,
  DEFAULT_CONTEXT_LENGTH,
  OPENAI_MERGE_COUNT,
  readMerges,
  type TokenizeOptions,
  type Truncation,
} from "./tokenizer.ts";
export { trainBpe } from "./bpe_trainer.ts";
export {
  IMAGENET_MEAN,
  IMAGENET_STD,
  type SyntheticOptions,
  type SyntheticSample,
  syntheticSample,
  type SyntheticSplit,
} from "./synthetic.ts";
export { decodeImage } from "./loader.ts";
