// run_folder.ts: a run never deletes or rewrites files it did not write. Pruning (keep the newest N, drop a timeline
// the run abandoned) is only safe among one run's own checkpoints, and a fresh run restarts metrics.jsonl and replaces
// summary.json, so before the first step rank 0 looks at what the output folder already holds: without --resume, any
// checkpoint, metrics, summary or loss curve is an earlier run's; with --resume, checkpoints whose identity options
// (model, data, seed: what makes it a different experiment) differ from this run's are another run's. Either way the
// run stops with one line, unless --overwrite says to remove them. Options that a resume may change (steps, logging,
// workers, device, precision) are not part of the identity.
import { BEST_CHECKPOINT, listCheckpoints, readCheckpointHeader } from "../checkpoint/checkpoint.ts";
import { flagOf, OptionError, type TrainOptions } from "./options.ts";

/** What a run writes into its folder besides checkpoints; a fresh run would restart or replace each. */
export const RUN_RECORDS = ["metrics.jsonl", "summary.json", "loss_curve.svg"] as const;

/** The options that say which experiment a checkpoint belongs to. */
export const RUN_IDENTITY_OPTIONS = [
  "model",
  "dataset",
  "metadata",
  "root",
  "bpe",
  "seed",
  "maskRatio",
  "syntheticSize",
  "syntheticObjects",
] as const satisfies readonly (keyof TrainOptions)[];

/** The output folder holds another run's checkpoints; the message says how to proceed. */
export class ForeignCheckpointsError extends OptionError {
  constructor(message: string) {
    super(message);
    this.name = "ForeignCheckpointsError";
  }
}

/**
 * Checks that `options.outputDir` holds no other run's checkpoints; with `options.overwrite`, removes them (one line
 * through `say`). Throws ForeignCheckpointsError otherwise. Checkpoints whose header cannot be read are left to
 * --resume auto, which reports and skips them.
 */
export function claimOutputDir(options: TrainOptions, say: (line: string) => void): void {
  const dir = options.outputDir;
  const checkpoints = listCheckpoints(dir);
  const best = `${dir}/${BEST_CHECKPOINT}`;
  const hasBest = exists(best);

  let foreign: { path: string; why: string }[];
  if (options.resume === undefined) {
    foreign = checkpoints.map(({ path }) => ({ path, why: "" }));
    if (hasBest) foreign.push({ path: best, why: "" });
    for (const name of RUN_RECORDS) if (exists(`${dir}/${name}`)) foreign.push({ path: `${dir}/${name}`, why: "" });
  } else {
    foreign = [];
    for (const { path } of [...checkpoints, ...(hasBest ? [{ path: best }] : [])]) {
      const differences = identityDifferences(path, options);
      if (differences !== null && differences.length > 0) foreign.push({ path, why: differences.join(", ") });
    }
  }
  if (foreign.length === 0) return;

  if (options.overwrite) {
    for (const { path } of foreign) Deno.removeSync(path);
    say(`overwrite: removed ${describeFiles(foreign.map((f) => f.path))} of an earlier run from ${dir}`);
    return;
  }
  const newest = foreign[0].path;
  if (options.resume === undefined) {
    throw new ForeignCheckpointsError(
      `--output-dir ${dir} holds ${describeFiles(foreign.map((f) => f.path))} of an earlier run (first: ${newest}); ` +
        "continue it with --resume auto, replace it with --overwrite (removes them), or choose another --output-dir",
    );
  }
  throw new ForeignCheckpointsError(
    `--output-dir ${dir} holds ${foreign.length} checkpoint(s) of another run: ${newest} has ${foreign[0].why}; ` +
      "resume with that run's options, replace it with --overwrite (removes them), or choose another --output-dir",
  );
}

/** How the identity options of checkpoint `path` differ from `options` ([] when they match), or null if unreadable. */
function identityDifferences(path: string, options: TrainOptions): string[] | null {
  let stored: Record<string, unknown>;
  try {
    const { meta } = readCheckpointHeader(path);
    if (typeof meta.options !== "object" || meta.options === null) return null;
    stored = meta.options as Record<string, unknown>;
  } catch {
    return null;
  }
  const out: string[] = [];
  for (const key of RUN_IDENTITY_OPTIONS) {
    const theirs = JSON.stringify(stored[key] ?? null), ours = JSON.stringify(options[key] ?? null);
    if (theirs !== ours) out.push(`${flagOf(key)} ${theirs} (this run: ${ours})`);
  }
  return out;
}

/** "3 checkpoint(s) and metrics.jsonl, summary.json". */
function describeFiles(paths: string[]): string {
  const records = paths.map((p) => p.slice(p.lastIndexOf("/") + 1)).filter((n) => !n.startsWith("checkpoint-"));
  const checkpoints = paths.length - records.length;
  const parts = [
    ...(checkpoints > 0 ? [`${checkpoints} checkpoint(s)`] : []),
    ...(records.length ? [records.join(", ")] : []),
  ];
  return parts.join(" and ");
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
