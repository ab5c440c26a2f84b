// launcher_link.ts: a rank started by `deno task launch` lives only as long as its launcher. The launcher puts its pid
// in DC_LAUNCHER_PID; the rank starts a native watchdog (dc_exit_with_parent: a thread that SIGKILLs the process
// once its parent is another process, i.e. the launcher died, even by SIGKILL) and, since the watchdog looks only
// every WATCH_INTERVAL_MS, checks its parent again right before each write to the output folder. A rank started any
// other way (torchrun, srun, by hand) has no such variable and is left alone.
import { lastError, native } from "../torch/lib.ts";

/** The variable through which the launcher names itself to its ranks. */
export const LAUNCHER_PID_VARIABLE = "DC_LAUNCHER_PID";
const WATCH_INTERVAL_MS = 200;

/** The launcher's pid when this process was started by one, else null. */
export function launcherPid(env: (name: string) => string | undefined = (n) => Deno.env.get(n)): number | null {
  const value = env(LAUNCHER_PID_VARIABLE);
  if (value === undefined || value === "") return null;
  const pid = Number(value);
  return Number.isInteger(pid) && pid > 1 ? pid : null;
}

function stopOrphan(pid: number): never {
  console.error(`detailclip train: the launcher (pid ${pid}) is gone; this rank stops before writing anything more`);
  Deno.exit(1);
}

/** Ties this process to its launcher (when it has one): stops now if the launcher is already gone. */
export function tieToLauncher(): void {
  const pid = launcherPid();
  if (pid === null) return;
  const status = native().dc_exit_with_parent(BigInt(pid), BigInt(WATCH_INTERVAL_MS));
  if (status < 0) throw new Error(`cannot watch the launcher (pid ${pid}): ${lastError()}`);
  if (status === 1) stopOrphan(pid);
}

/** Before a write to the output folder: a rank whose launcher is gone stops instead. */
export function stopIfLauncherGone(): void {
  const pid = launcherPid();
  if (pid !== null && Deno.ppid !== pid) stopOrphan(pid);
}
