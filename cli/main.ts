// main.ts: the command-line entry point; one file per command under cli/, dispatched by the first argument. Every
// failure of a command ends in cli/errors.ts: one line on stderr and a documented exit status (docs/errors.md).
import { WriteError } from "../src/fs/write_error.ts";
import { reportFailure } from "./errors.ts";

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, { summary: string; load: () => Promise<Command> }> = {
  info: { summary: "parameter counts of a model preset", load: async () => (await import("./info.ts")).main },
  train: {
    summary: "train DetailCLIP or CLIP (default: the built-in demo)",
    load: async () => (await import("./train.ts")).main,
  },
  eval: {
    summary: "evaluate a checkpoint: zeroshot, retrieval, probe, segprobe",
    load: async () => (await import("./eval.ts")).main,
  },
  embed: {
    summary: "L2-normalised CLIP image/text embeddings of any checkpoint",
    load: async () => (await import("./embed.ts")).main,
  },
  export: {
    summary: "export weights: backbone (timm ViT keys, safetensors or .pt)",
    load: async () => (await import("./export.ts")).main,
  },
  tokenize: { summary: "CLIP BPE token ids of captions", load: async () => (await import("./tokenize.ts")).main },
  data: {
    summary: "data tools: bpe (learn a BPE vocabulary), yfcc-to-csv (YFCC15M pickle to CSV), mnist, fashion-mnist, " +
      "openai-bpe (OpenAI's CLIP vocabulary)",
    load: async () => (await import("./data.ts")).main,
  },
  launch: {
    summary: "start N training ranks on this node (torchrun-style), restart them on failure",
    load: async () => (await import("./launch.ts")).main,
  },
  viz: {
    summary: "pictures: tokens (the teacher's attention and the cells it keeps for the student)",
    load: async () => (await import("./viz.ts")).main,
  },
  golden: {
    summary: "run one official training step from golden files and compare",
    load: async () => (await import("./golden.ts")).main,
  },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return ["usage: detailclip <command> [options]   (<command> --help for its options)", "", "commands:", ...lines].join(
    "\n",
  );
}

export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (command === undefined) {
    console.error(`detailclip: unknown command '${name}' (commands: ${Object.keys(commands).join(", ")})`);
    return 2;
  }
  guardStdout();
  try {
    return await (await command.load())(rest);
  } catch (error) {
    return reportFailure(name, error);
  }
}

let stdoutGuarded = false;

/**
 * A failed write to stdout (a full disk behind `> file`, a closed pipe) surfaces from console.log as an OS error
 * without a name; this makes it a WriteError naming stdout, so the boundary reports it as one line with status 7.
 */
function guardStdout(): void {
  if (stdoutGuarded) return;
  stdoutGuarded = true;
  for (const method of ["log", "info"] as const) {
    const original = console[method].bind(console);
    console[method] = (...args: unknown[]): void => {
      try {
        original(...args);
      } catch (error) {
        throw new WriteError("stdout", error);
      }
    };
  }
}

if (import.meta.main) {
  const name = Deno.args[0] ?? "";
  // A rejection or an error outside the awaited chain (a timer, a stream pump) gets the same one line and status.
  const late = (event: PromiseRejectionEvent | ErrorEvent): void => {
    event.preventDefault();
    Deno.exit(reportFailure(name, event instanceof PromiseRejectionEvent ? event.reason : event.error));
  };
  globalThis.addEventListener("unhandledrejection", late);
  globalThis.addEventListener("error", late);
  let status: number;
  try {
    status = await run(Deno.args);
  } catch (error) {
    status = reportFailure(name, error);
  }
  Deno.exit(status);
}
