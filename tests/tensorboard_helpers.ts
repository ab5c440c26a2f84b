// tensorboard_helpers.ts: reading event files back with TensorBoard's own reader (tests/tensorboard_read.py, the
// `tensorboard` package that tools/setup.sh installs into .tools/tb-pylib), for the TensorBoard tests.
import { missingTool } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TB_PYLIB = `${ROOT}.tools/tb-pylib`;
const READER = `${ROOT}tests/tensorboard_read.py`;

function tensorBoardMissing(): string | null {
  try {
    const result = new Deno.Command("/usr/bin/python3", {
      args: ["-c", "from tensorboard.backend.event_processing import event_accumulator"],
      env: { PYTHONPATH: TB_PYLIB },
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (result.success) return null;
    const last = new TextDecoder().decode(result.stderr).trim().split("\n").pop() ?? "import failed";
    return `/usr/bin/python3 cannot import tensorboard from .tools/tb-pylib (tools/setup.sh installs it): ${last}`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "/usr/bin/python3 not found";
    throw error;
  }
}

/** True (and reported once) when TensorBoard's reader cannot run here. */
export const noTensorBoard: boolean = missingTool("tensorboard 2.21.0", tensorBoardMissing());

/** The scalars TensorBoard's EventAccumulator reads from `dir`: tag → [step, value][]. */
export function readTensorBoard(dir: string): { tags: Record<string, [number, number][]>; file_version: number } {
  const result = new Deno.Command("/usr/bin/python3", {
    args: [READER, dir],
    env: { PYTHONPATH: TB_PYLIB },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const err = new TextDecoder().decode(result.stderr);
  if (!result.success) throw new Error(`tensorboard_read.py ${dir} failed:\n${err}`);
  return JSON.parse(new TextDecoder().decode(result.stdout));
}
