// sources_from_options.ts: the training data the options name: the built-in synthetic shapes, or a file-based source
// (csv, webdataset indexed or streamed, coco, yfcc15m, redcaps) decoded by the native workers with the CLIP BPE of
// --bpe (OpenAI's bpe_simple_vocab_16e6.txt.gz, or one learned with `deno task data bpe`). A missing flag is an
// option error; a file that cannot be read is a data error naming the flags.
import { syntheticTrainSource, type TrainSource } from "../data/sources.ts";
import { cocoTrainSource } from "../data/coco.ts";
import { csvTrainSource } from "../data/csv.ts";
import { webDatasetTrainSource } from "../data/webdataset.ts";
import { streamingWebDatasetSource } from "../data/webdataset_stream.ts";
import { yfccTrainSource } from "../data/yfcc.ts";
import { redcapsTrainSource } from "../data/redcaps.ts";
import { ClipTokenizer } from "../data/tokenizer.ts";
import { DataError } from "../data/data_error.ts";
import type { ModelConfig } from "../models/configs.ts";
import { OptionError, type TrainOptions } from "./options.ts";

/** The source of `options.dataset`, at the preset's image size and context length, sharded for this rank. */
export function trainSourceFromOptions(
  options: TrainOptions,
  preset: ModelConfig,
  views: 1 | 2,
  shard: { rank: number; world: number },
): TrainSource {
  const imageSize = preset.vision.imageSize;
  const contextLength = preset.text.context;
  if (options.dataset === "synthetic") {
    return syntheticTrainSource({
      seed: options.seed,
      epochSize: options.syntheticSize,
      imageSize,
      contextLength,
      views,
      objects: options.syntheticObjects,
    });
  }
  if (!options.metadata) throw new OptionError(`--dataset ${options.dataset} needs --metadata (${METADATA_HELP})`);
  if (!options.bpe) throw new OptionError(`--dataset ${options.dataset} needs --bpe (a CLIP BPE merges file)`);
  let tokenizer: ClipTokenizer;
  try {
    tokenizer = ClipTokenizer.fromFile(options.bpe);
  } catch (error) {
    throw new DataError(`--bpe ${options.bpe}: ${(error as Error).message}`, { cause: error });
  }
  const common = { tokenizer, contextLength, imageSize, views, seed: options.seed, threads: options.workers || 1 };
  const root = options.root === "" ? undefined : options.root;
  try {
    if (options.dataset === "csv") {
      return csvTrainSource({
        ...common,
        path: options.metadata,
        root,
        imageColumn: options.csvImgKey,
        captionColumn: options.csvCaptionKey,
        separator: options.csvSeparator,
      });
    }
    if (options.dataset === "webdataset" && (options.trainNumSamples !== undefined || options.datasetResampled)) {
      if (options.trainNumSamples === undefined) {
        throw new OptionError("--dataset-resampled needs --train-num-samples (the epoch length of a stream)");
      }
      return streamingWebDatasetSource({
        ...common,
        ...shard,
        shards: options.metadata,
        root,
        epochSize: options.trainNumSamples,
        resampled: options.datasetResampled,
        workers: Math.max(1, options.workers),
        bufferSize: options.shuffleBuffer,
        sampleLog: options.testHookSampleLog,
      });
    }
    if (options.dataset === "webdataset") return webDatasetTrainSource({ ...common, shards: options.metadata, root });
    if (options.dataset === "yfcc15m" || options.dataset === "redcaps") {
      if (root === undefined) {
        throw new OptionError(`--dataset ${options.dataset} needs --root (${ROOT_HELP[options.dataset]})`);
      }
      if (options.dataset === "yfcc15m") return yfccTrainSource({ ...common, metadata: options.metadata, root });
      return redcapsTrainSource({ ...common, annotations: options.metadata, root });
    }
    return cocoTrainSource({ ...common, annotations: options.metadata, root: options.root });
  } catch (error) {
    if (error instanceof OptionError) throw error;
    throw new DataError(`--dataset ${options.dataset} --metadata ${options.metadata}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

const METADATA_HELP = "csv: the manifest; webdataset: shard paths or a brace pattern; coco: the captions JSON; " +
  "yfcc15m: the (index, hash, title, desc) pickle; redcaps: annotation JSON files, a comma list or a brace pattern";
const ROOT_HELP = {
  yfcc15m: "the folder holding test_zip_3/<hash[:3]>.zip",
  redcaps: "the folder holding <subreddit>/<image_id>.jpg",
};
