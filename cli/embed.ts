// embed.ts: `deno task embed --checkpoint P (--image F... | --images LIST) (--text T... | --texts FILE) --out F`:
// L2-normalised CLIP embeddings of images and/or texts from any checkpoint the project reads (OpenAI/OpenCLIP weights,
// our checkpoints, official DetailCLIP .pt), written as safetensors: image_embeds (N, E) and text_embeds (M, E) in
// input order, and logit_scale (the exp'd factor on cosine similarities). Images go through the evaluation transform
// (Resize + CenterCrop to the model's size, bilinear) with the normalisation the weights were trained with; an image
// that does not decode is an error naming it rather than a silently missing row.
import { dirname, isAbsolute, join } from "node:path";
import { type ClipEncoder, loadClipEncoder } from "../src/eval/clip_encoder.ts";
import { embedImageFiles, embedTexts } from "../src/eval/embeddings.ts";
import { type NamedInput, outputOverInputProblem } from "../src/fs/same_file.ts";
import { type Device, Tensor } from "../src/torch/mod.ts";
import { writeSafeTensors } from "../src/torch/io.ts";
import { UsageError } from "./usage_error.ts";
import { parseFlags } from "./args.ts";
import { parseDevice, requireDevice } from "../src/torch/device.ts";

const HELP = `usage: deno task embed --checkpoint P (--image F... | --images LIST) (--text T... | --texts FILE) --out F

  --checkpoint P     OpenAI/OpenCLIP weights (.safetensors, .bin/.pt state dict, OpenAI's TorchScript .pt), one of our
                     checkpoints, or an official DetailCLIP .pt
  --model NAME       the architecture: OpenAI/OpenCLIP names (ViT-B-32, ViT-B-32-quickgelu, ViT-B/32, ViT-L-14, ...;
                     default: read off the weights' shapes, QuickGELU for TorchScript archives) or, for an official
                     DetailCLIP .pt, our preset (default: its args.model)
  --image F...       image files (one or more values)
  --images LIST      a text file of image paths, one per line (relative paths start at the list's folder)
  --text T...        captions (one or more values)
  --texts FILE       a text file of captions, one per line
  --bpe F            CLIP BPE merges file (OpenAI's bpe_simple_vocab_16e6.txt.gz); needed for text unless the
                     checkpoint carries its tokenizer (ours do)
  --ema              DetailCLIP's EMA towers
  --batch-size N     images or texts per forward (default 64)
  --device X         cpu | cuda | cuda:N (default cpu)
  --out F            the safetensors file to write (required)`;

interface EmbedArgs {
  checkpoint: string;
  model?: string;
  bpe?: string;
  ema: boolean;
  images: string[];
  texts: string[];
  batchSize: number;
  device: Device;
  out: string;
}

function readLines(path: string, flag: string): string[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new UsageError(`${flag} ${path}: ${(error as Error).message}`);
  }
  return text.split(/\r?\n/).filter((line) => line.trim() !== "");
}

function readEmbedArgs(args: string[]): EmbedArgs {
  const flags = parseFlags(args, {
    values: ["--checkpoint", "--model", "--images", "--texts", "--bpe", "--batch-size", "--device", "--out"],
    booleans: ["--ema"],
    lists: ["--image", "--text"],
    once: true,
    help: HELP,
  });
  const values = flags.values;
  const images = flags.lists.get("--image") ?? [];
  const texts = flags.lists.get("--text") ?? [];
  const ema = flags.booleans.has("--ema");
  const checkpoint = values.get("--checkpoint");
  if (checkpoint === undefined) throw new UsageError(`--checkpoint is required\n\n${HELP}`);
  const out = values.get("--out");
  if (out === undefined) throw new UsageError("--out is required (a .safetensors file)");
  if (images.length > 0 && values.has("--images")) throw new UsageError("--image and --images exclude each other");
  if (texts.length > 0 && values.has("--texts")) throw new UsageError("--text and --texts exclude each other");
  const list = values.get("--images");
  if (list !== undefined) {
    for (const line of readLines(list, "--images")) {
      const path = line.trim();
      images.push(isAbsolute(path) ? path : join(dirname(list), path));
    }
  }
  if (values.has("--texts")) texts.push(...readLines(values.get("--texts")!, "--texts"));
  if (images.length === 0 && texts.length === 0) {
    throw new UsageError("nothing to embed: give --image/--images and/or --text/--texts");
  }
  const rawBatch = values.get("--batch-size") ?? "64";
  const batchSize = Number(rawBatch);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new UsageError(`--batch-size must be a positive integer, got '${rawBatch}'`);
  }
  const device = parseDevice(values.get("--device") ?? "cpu");
  requireDevice(device);
  const inputs: NamedInput[] = [];
  for (const flag of ["--checkpoint", "--bpe", "--images", "--texts"]) {
    if (values.has(flag)) inputs.push({ flag, path: values.get(flag)! });
  }
  for (const path of images) inputs.push({ flag: "--image", path });
  const overInput = outputOverInputProblem("--out", out, inputs);
  if (overInput !== null) throw new UsageError(overInput);
  return {
    checkpoint,
    model: values.get("--model"),
    bpe: values.get("--bpe"),
    ema,
    images,
    texts,
    batchSize,
    device,
    out,
  };
}

/** Progress on stderr: one rewritten line on a terminal, a line per quarter otherwise. */
function progress(what: string, total: number): (done: number) => void {
  const terminal = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  let lastQuarter = -1;
  return (done: number): void => {
    const line = `embed: ${what} ${done}/${total}`;
    if (terminal) {
      Deno.stderr.writeSync(encoder.encode(`\r${line}\x1b[K${done === total ? "\n" : ""}`));
      return;
    }
    const quarter = Math.floor((4 * done) / total);
    if (quarter !== lastQuarter) {
      lastQuarter = quarter;
      console.error(line);
    }
  };
}

export function main(argv: string[]): Promise<number> {
  return Promise.resolve(embed(readEmbedArgs(argv)));
}

function embed(args: EmbedArgs): number {
  // A checkpoint that cannot be read (status 6), an image that does not decode (5) or a failed write (7) ends in the
  // boundary of cli/errors.ts with one line.
  const encoder: ClipEncoder = loadClipEncoder(args.checkpoint, {
    model: args.model,
    bpe: args.bpe,
    device: args.device,
    ema: args.ema,
  });
  const outputs = new Map<string, Tensor>();
  try {
    console.error(`embed: ${encoder.description}`);
    const run = { batchSize: args.batchSize, device: args.device };
    if (args.texts.length > 0) {
      outputs.set(
        "text_embeds",
        embedTexts(encoder, args.texts, { ...run, onProgress: progress("texts", args.texts.length) }),
      );
    }
    if (args.images.length > 0) {
      const onProgress = progress("images", args.images.length);
      outputs.set("image_embeds", embedImageFiles(encoder, args.images, { ...run, onProgress }));
    }
    outputs.set("logit_scale", Tensor.scalar(encoder.logitScale()));
    writeSafeTensors(args.out, outputs, {
      checkpoint: args.checkpoint,
      model: encoder.description,
      images: JSON.stringify(args.images),
      texts: JSON.stringify(args.texts),
    });
    console.error(`embed: wrote ${args.out}`);
    return 0;
  } finally {
    for (const t of outputs.values()) t.dispose();
    encoder.dispose();
  }
}
