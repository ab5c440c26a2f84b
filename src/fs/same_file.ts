// same_file.ts: is a command's output one of its own inputs? `export backbone --checkpoint C --out C` or
// `data bpe --input X --out X` would replace the input with what was computed from it. Two paths name the same file
// when they resolve to the same real path (symlinks followed) or the same inode (hard links). A missing output cannot
// be an existing input, so new outputs cost one failed stat.

/** One input of a command: the flag that named it (for the message) and its path. */
export interface NamedInput {
  flag: string;
  path: string;
}

/** The first input that `output` is the same file as, or null. Inputs that do not exist are ignored. */
export function inputAt(output: string, inputs: readonly NamedInput[]): NamedInput | null {
  const target = identity(output);
  if (target === null) return null;
  for (const input of inputs) {
    const other = identity(input.path);
    if (other !== null && (other.real === target.real || (other.ino !== null && other.ino === target.ino))) {
      return input;
    }
  }
  return null;
}

/** The one-line refusal for an output that is an input, or null when it is not. */
export function outputOverInputProblem(
  outputFlag: string,
  output: string,
  inputs: readonly NamedInput[],
): string | null {
  const input = inputAt(output, inputs);
  if (input === null) return null;
  const same = input.path === output ? "" : ` (${input.path})`;
  return `${outputFlag} ${output} is the same file as ${input.flag}${same}: writing it would replace the input; ` +
    `choose another ${outputFlag}`;
}

function identity(path: string): { real: string; ino: string | null } | null {
  try {
    const info = Deno.statSync(path);
    const ino = info.ino === null || info.dev === null ? null : `${info.dev}:${info.ino}`;
    return { real: Deno.realPathSync(path), ino };
  } catch {
    return null;
  }
}
