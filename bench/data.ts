// bench/data.ts: the data path's throughput on one core. (1) decode + two augmented 224 px views (the official train
// transform, docs/data.md#image-transforms) through the native loader with one worker thread, against PIL + torchvision
// (Debian's python3-torchvision, one thread) on the same generated JPEGs in the same run; (2) captions/s of our
// ClipTokenizer (ids into the (B, 77) int64 tensor) against OpenAI's SimpleTokenizer on the same captions and merges:
// OpenAI's own simple_tokenizer.py (tests/openai_simple_tokenizer.py) with OpenAI's vocabulary when .tools/ holds it
// (`./dc setup`) and python3-regex is installed; otherwise the standard-library port (tests/simple_tokenizer.py) with
// merges learned from the captions, and the output says which ran. bench/data_baseline.py is the Python side and also
// writes the JPEGs (PIL, quality 90, 4:2:0).
// Usage: deno task bench:data [--small N] [--large N] [--captions N] [--repeats N] [--token-rounds N]
//                             [--tokenizer-only] [--json]
import { parseArgs } from "node:util";
import { NativeLoader } from "../src/data/loader.ts";
import { ClipTokenizer, readMerges } from "../src/data/tokenizer.ts";
import { trainBpe, writeMerges } from "../src/data/bpe_trainer.ts";
import { setNumThreads } from "../src/torch/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    small: { type: "string", default: "200" },
    large: { type: "string", default: "50" },
    captions: { type: "string", default: "20000" },
    repeats: { type: "string", default: "2" },
    "token-rounds": { type: "string", default: "3" },
    "tokenizer-only": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
});
const SMALL = Number(values.small), LARGE = Number(values.large);
const CAPTIONS = Number(values.captions), REPEATS = Math.max(1, Number(values.repeats));
const TOKEN_ROUNDS = Math.max(1, Number(values["token-rounds"]));
const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./data_baseline.py", import.meta.url).pathname;
const OPENAI_BPE = new URL("../.tools/bpe_simple_vocab_16e6.txt.gz", import.meta.url).pathname;
setNumThreads(1);

/** Why the OpenAI baseline cannot run here, or null when it can. */
function openAiMissing(): string | null {
  try {
    Deno.statSync(OPENAI_BPE);
  } catch {
    return "no .tools/bpe_simple_vocab_16e6.txt.gz (./dc setup, or deno task data openai-bpe)";
  }
  const probe = new Deno.Command(PYTHON, { args: ["-c", "import regex"], stdout: "null", stderr: "null" }).outputSync();
  return probe.success ? null : "no python3-regex";
}

function python(args: string[]): Record<string, number | string> {
  const out = new Deno.Command(PYTHON, { args: [SCRIPT, ...args], stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`data_baseline.py ${args[0]} failed:\n${new TextDecoder().decode(out.stderr)}`);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

const dir = Deno.makeTempDirSync({ prefix: "dc_bench_data_" });
try {
  const images = values["tokenizer-only"] ? null : benchImages();
  const tokens = benchTokenizer();
  console.log(JSON.stringify({ bench: "data", ...images, ...tokens }));
  if (!values.json) {
    if (images !== null) {
      console.log(
        `images (decode + 2 views at 224, 1 thread): native ${images.native_images_per_s}/s ` +
          `(${images.native_no_dct_images_per_s}/s without DCT scaling), PIL+torchvision ` +
          `${images.torchvision_images_per_s}/s: ${images.image_ratio}x (target >= 2x)`,
      );
    }
    console.log(
      `tokenizer (${tokens.captions} captions, context 77, ${tokens.tokenizer_vocab}): ` +
        `${tokens.tokenizer_captions_per_s}/s, Python ${tokens.python_baseline} ${tokens.python_captions_per_s}/s ` +
        `(medians of ${TOKEN_ROUNDS} alternating rounds): ${tokens.tokenizer_ratio}x, rounds ` +
        `${tokens.tokenizer_round_ratios.join(" ")} (target >= 5x)`,
    );
  }
} finally {
  Deno.removeSync(dir, { recursive: true });
}

function benchImages() {
  python(["make", dir, String(SMALL), String(LARGE)]);
  const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".jpg")).sort();
  const paths = files.map((n) => `${dir}/${n}`);
  const megabytes = paths.reduce((sum, p) => sum + Deno.statSync(p).size, 0) / 1e6;

  const nativePass = (loader: NativeLoader, epoch: number): number => {
    const batch = 25;
    const start = performance.now();
    for (let at = 0; at < paths.length; at += batch) {
      const chunk = paths.slice(at, at + batch);
      const result = loader.run({
        candidates: chunk.map((path, k) => ({ path, index: at + k })),
        slotBegin: Array.from({ length: chunk.length + 1 }, (_, k) => k),
        seed: 0,
        rank: 0,
        epoch,
      });
      if (result.used.includes(-1)) throw new Error(`native loader skipped an image: ${result.status}`);
      result.u.dispose();
      result.v?.dispose();
    }
    return (performance.now() - start) / 1000;
  };
  const nativeRate = (dctScaling: boolean): number => {
    using loader = new NativeLoader({ threads: 1, imageSize: 224, views: 2, mode: "train", dctScaling });
    nativePass(loader, 99); // warm-up
    let best = Infinity;
    for (let r = 0; r < REPEATS; r++) best = Math.min(best, nativePass(loader, r));
    return paths.length / best;
  };
  const ours = nativeRate(true);
  const oursNoDct = nativeRate(false);
  const py = python(["images", dir, String(REPEATS)]);
  const pyRate = Number(py.images) / Number(py.seconds);
  return {
    images: paths.length,
    image_sizes: `${SMALL}x500x375 + ${LARGE}x1600x1200 JPEG q90`,
    megabytes: Number(megabytes.toFixed(1)),
    native_images_per_s: Number(ours.toFixed(1)),
    native_no_dct_images_per_s: Number(oursNoDct.toFixed(1)),
    torchvision_images_per_s: Number(pyRate.toFixed(1)),
    image_ratio: Number((ours / pyRate).toFixed(2)),
    image_ratio_no_dct: Number((oursNoDct / pyRate).toFixed(2)),
    torchvision_version: py.torchvision,
  };
}

function benchTokenizer() {
  const captions = makeCaptions(CAPTIONS);
  // OpenAI's vocabulary and OpenAI's own code where both are here; else merges learned from the captions and the
  // standard-library port, which reads any merges file.
  const missing = openAiMissing();
  let merges: string[], mergesPath: string, vocab: string;
  if (missing === null) {
    merges = readMerges(OPENAI_BPE);
    mergesPath = OPENAI_BPE;
    vocab = `OpenAI's bpe_simple_vocab_16e6 (${merges.length} merges)`;
  } else {
    merges = trainBpe(captions.slice(0, 5000), 8192);
    mergesPath = `${dir}/merges.txt.gz`;
    writeMerges(mergesPath, merges);
    vocab = `${merges.length} merges learned from the captions; OpenAI's baseline skipped: ${missing}`;
  }
  const captionsPath = `${dir}/captions.json`;
  Deno.writeTextFileSync(captionsPath, JSON.stringify(captions));
  // Ours and Python take turns, round after round, so a change in the machine's load hits both sides of a round
  // alike; each side reports the best of 3 passes over all captions, every pass with a fresh tokenizer (an empty
  // cache). The ratio reported is the median of the rounds' ratios.
  const oursPass = (): { seconds: number; checksum: bigint } => {
    const tok = new ClipTokenizer(merges); // the constructor is not timed, as on the Python side
    const start = performance.now();
    const t = tok.tokenize(captions, 77);
    const seconds = (performance.now() - start) / 1000;
    const checksum = (t.toTypedArray() as BigInt64Array).reduce((a, b) => a + b, 0n);
    t.dispose();
    return { seconds, checksum };
  };
  // A warm-up pass (the first also pays for compiling the tokenizer's code), whose ids every round checks.
  const oursChecksum = oursPass().checksum;
  const tokRates: number[] = [], pyTokRates: number[] = [], tokRatios: number[] = [];
  let baseline = "";
  for (let round = 0; round < TOKEN_ROUNDS; round++) {
    let best = Infinity;
    for (let pass = 0; pass < 3; pass++) best = Math.min(best, oursPass().seconds);
    const pyTok = python(["tokens", mergesPath, captionsPath, ...(missing === null ? ["openai"] : [])]);
    baseline = String(pyTok.baseline);
    if (BigInt(pyTok.checksum) !== oursChecksum) {
      throw new Error(`token ids differ from ${baseline} (checksum ${oursChecksum} vs ${pyTok.checksum})`);
    }
    tokRates.push(captions.length / best);
    pyTokRates.push(Number(pyTok.captions) / Number(pyTok.seconds));
    tokRatios.push(tokRates[round] / pyTokRates[round]);
  }
  return {
    captions: captions.length,
    merges: merges.length,
    tokenizer_vocab: vocab,
    python_baseline: baseline,
    tokenizer_captions_per_s: Math.round(median(tokRates)),
    python_captions_per_s: Math.round(median(pyTokRates)),
    tokenizer_ratio: Number(median(tokRatios).toFixed(2)),
    tokenizer_round_ratios: tokRatios.map((r) => Number(r.toFixed(2))),
    ids_match: true,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Web-alt-text-like captions: Zipf-distributed words from a 6,000-word synthetic vocabulary, numbers, punctuation,
 * some accented and non-Latin words and HTML entities; deterministic (sfc32-like LCG). */
function makeCaptions(count: number): string[] {
  let s = 0x2545f491;
  const rand = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  const syllables = ["ka", "lo", "mi", "ter", "san", "do", "ri", "pho", "ne", "vel", "gra", "tu", "bes", "ion", "ar"];
  const common = ["a", "the", "of", "with", "in", "on", "and", "photo", "view", "at", "for", "my", "new", "old"];
  const extra = ["café", "naïve", "über", "straße", "東京", "москва", "&amp;", "it's", "we'll", "2019", "#travel"];
  const words: string[] = [...common, ...extra];
  while (words.length < 6000) {
    let w = "";
    const n = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < n; k++) w += syllables[Math.floor(rand() * syllables.length)];
    words.push(rand() < 0.1 ? w[0].toUpperCase() + w.slice(1) : w);
  }
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 4 + Math.floor(rand() * 22);
    const parts: string[] = [];
    for (let k = 0; k < len; k++) {
      const z = Math.floor(words.length * rand() ** 3); // Zipf-like: common words recur
      parts.push(words[z]);
      if (rand() < 0.05) parts.push(String(Math.floor(rand() * 1000)));
    }
    out.push(parts.join(" ") + (rand() < 0.3 ? "." : rand() < 0.1 ? "!!" : ""));
  }
  return out;
}
