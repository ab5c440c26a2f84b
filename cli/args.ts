// args.ts: the command line of eval, embed, export and viz, read by node:util parseArgs. What this adds on top of it:
// flags that take several values (`--image A B C`), a refusal of a value that is itself a flag (`--out --ema` is a
// forgotten value, not a file named "--ema"), optionally of a flag given twice, and the messages these commands have
// always printed (`unknown option '--x'`, `--out needs a value`) as UsageErrors (exit status 2).
import { parseArgs } from "node:util";
import { UsageError } from "./usage_error.ts";

/** Which flags a command takes, by full name with the dashes ("--checkpoint"). */
export interface FlagSpec {
  /** Flags with one value. */
  values?: readonly string[];
  /** Flags without a value. */
  booleans?: readonly string[];
  /** Flags with one or more values: every argument up to the next flag. */
  lists?: readonly string[];
  /** Refuse a value flag given twice (else the last one counts). */
  once?: boolean;
  /** Appended to the message for an unknown option; `--help` or `-h` throws it as the UsageError's whole message. */
  help?: string;
}

/** What was given: the value flags' values, the boolean flags set, the list flags' values (all keyed "--name"). */
export interface Flags {
  values: Map<string, string>;
  booleans: Set<string>;
  lists: Map<string, string[]>;
}

/** Reads `args` (no subcommand) against `spec`; a mistake is a UsageError with the command's usual message. */
export function parseFlags(args: string[], spec: FlagSpec): Flags {
  const strings = [...(spec.values ?? []), ...(spec.lists ?? [])];
  const options = Object.fromEntries([
    ...strings.map((flag) => [flag.slice(2), { type: "string" as const }]),
    ...(spec.booleans ?? []).map((flag) => [flag.slice(2), { type: "boolean" as const }]),
  ]);
  // strict: false hands every token back, so the messages below are this project's, not node's.
  const { tokens } = parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true });
  const unknown = (what: string): UsageError =>
    new UsageError(`unknown option '${what}'${spec.help === undefined ? "" : `\n\n${spec.help}`}`);
  const flags: Flags = { values: new Map(), booleans: new Set(), lists: new Map() };
  let list: string[] | undefined; // the list flag that the arguments after it extend
  let listed = -1; // the index in `args` of the last list value (a "-xy" argument comes back as two tokens)
  for (const token of tokens) {
    // A list takes every argument up to the next "--flag", as it always has: "-1", "- a caption" included.
    const raw = args[token.index];
    if (list !== undefined && !raw.startsWith("--")) {
      if (token.index !== listed) list.push(raw);
      listed = token.index;
      continue;
    }
    list = undefined;
    if (token.kind === "positional" || token.kind === "option-terminator") throw unknown(raw);
    if (spec.help !== undefined && (raw === "--help" || raw === "-h")) throw new UsageError(spec.help);
    const flag = `--${token.name}`;
    if (token.rawName !== flag) throw unknown(raw);
    if (spec.booleans?.includes(flag)) {
      if (token.value !== undefined) throw new UsageError(`${flag} takes no value`);
      flags.booleans.add(flag);
    } else if (spec.lists?.includes(flag)) {
      if (token.value === undefined || (!token.inlineValue && token.value.startsWith("--"))) {
        throw new UsageError(`${flag} needs at least one value`);
      }
      list = flags.lists.get(flag) ?? [];
      flags.lists.set(flag, list);
      list.push(token.value);
      listed = token.inlineValue ? token.index : token.index + 1;
    } else if (spec.values?.includes(flag)) {
      if (token.value === undefined || (!token.inlineValue && token.value.startsWith("--"))) {
        throw new UsageError(`${flag} needs a value`);
      }
      if (spec.once && flags.values.has(flag)) throw new UsageError(`${flag} is given twice`);
      flags.values.set(flag, token.value);
    } else {
      throw unknown(raw);
    }
  }
  return flags;
}

/**
 * An integer flag in [1, max] (`fallback` when absent). The upper bound keeps a typo (or a hostile value) from a loop
 * over 2^53 images (docs/errors.md).
 */
export function integerFlag(flags: Flags, flag: string, fallback: number, max: number): number {
  const raw = flags.values.get(flag);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw.trim() === "" || !Number.isInteger(n) || n < 1 || n > max) {
    throw new UsageError(`${flag} must be an integer in [1, ${max.toLocaleString("en")}], got '${raw}'`);
  }
  return n;
}
