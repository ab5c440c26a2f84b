// tokenize.ts: `tokenize --bpe PATH [--context N] [--truncation keep-eot|official] [TEXT...]` prints, for each caption,
// one JSON array: the row the text encoder sees ([SOT] ids [EOT], cut to N, zero-padded to N). Captions come from the
// arguments, or one per line from stdin when there are none. Pure TypeScript: no native library is loaded.
import { parseArgs } from "node:util";
import {
  BpeFileError,
  ClipTokenizer,
  DEFAULT_CONTEXT_LENGTH,
  type Truncation,
  TRUNCATIONS,
} from "../src/data/tokenizer.ts";
import { UsageError } from "./usage_error.ts";

const help = `usage: tokenize --bpe PATH [--context N] [--truncation keep-eot|official] [TEXT...]

Prints one JSON array of ${DEFAULT_CONTEXT_LENGTH} (or N) ids per caption. Without TEXT, reads captions from stdin,
one per line. A caption that starts with '-' goes after '--'.
  --bpe PATH          merges file (OpenAI's bpe_simple_vocab_16e6.txt.gz, written by 'data openai-bpe', or one
                      written by 'data bpe')
  --context N         context length, an integer >= 2 (default ${DEFAULT_CONTEXT_LENGTH})
  --truncation MODE   keep-eot (default: EOT stays the last token) or official (plain cut, EOT dropped)`;

export async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseOptions(args);
  if (values.help) {
    console.log(help);
    return 0;
  }
  if (!values.bpe) throw new UsageError("--bpe PATH is required (a merges file, e.g. bpe_simple_vocab_16e6.txt.gz)");
  const contextLength = parseContext(values.context);
  const truncation = parseTruncation(values.truncation);
  let tokenizer: ClipTokenizer;
  try {
    tokenizer = ClipTokenizer.fromFile(values.bpe);
  } catch (error) {
    if (error instanceof BpeFileError) throw new UsageError(`--bpe: ${error.message}`);
    throw error;
  }

  const captions = positionals.length > 0 ? positionals : await readStdinLines();
  const { ids, truncated } = tokenizer.tokenizeRows(captions, contextLength, { truncation });
  console.log(ids.map((row) => JSON.stringify(row)).join("\n"));
  if (truncated.length > 0) {
    const what = truncation === "keep-eot" ? "cut, EOT kept last" : "cut, EOT dropped (official)";
    console.error(
      `tokenize: ${truncated.length} of ${captions.length} captions longer than ${contextLength} tokens (${what}); ` +
        `lines ${truncated.slice(0, 10).map((i) => i + 1).join(", ")}${truncated.length > 10 ? ", ..." : ""}`,
    );
  }
  return 0;
}

function parseOptions(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        bpe: { type: "string" },
        context: { type: "string" },
        truncation: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    if (String((error as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS")) {
      throw new UsageError(`${(error as Error).message} (options: --bpe PATH, --context N, --truncation MODE)`);
    }
    throw error;
  }
}

/** The longest --context (CLIP's is 77). */
const MAX_CONTEXT = 65536;

function parseContext(value: string | undefined): number {
  if (value === undefined) return DEFAULT_CONTEXT_LENGTH;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  // The row buffer is captions × context ids: an absurd context would be an allocation failure, not a row.
  if (!Number.isSafeInteger(n) || n < 2 || n > MAX_CONTEXT) {
    throw new UsageError(`--context must be an integer in [2, ${MAX_CONTEXT}] (room for SOT and EOT), got '${value}'`);
  }
  return n;
}

function parseTruncation(value: string | undefined): Truncation {
  if (value === undefined) return "keep-eot";
  if (!(TRUNCATIONS as readonly string[]).includes(value)) {
    throw new UsageError(`--truncation must be one of ${TRUNCATIONS.join(", ")}, got '${value}'`);
  }
  return value as Truncation;
}

/** stdin split into lines; a final newline does not add an empty caption, empty lines inside do (ids stay aligned). */
async function readStdinLines(): Promise<string[]> {
  const text = await new Response(Deno.stdin.readable).text();
  const lines = text.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}
