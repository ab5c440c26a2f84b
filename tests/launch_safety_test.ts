// launch_safety_test.ts: the launcher never trains from scratch when the user asked to resume (planRestart on real
// checkpoint files, then `launch --max-restarts 2 -- --resume BAD` end to end), and ranks do not outlive their
// launcher: `kill -9` of the launcher leaves no rank alive 10 s later, and a rank whose launcher is already gone
// stops before it writes anything.
import { planRestart, resumeArgs } from "../cli/launch.ts";
import { ProcessGroup } from "../src/torch/dist.ts";
import { Tensor } from "../src/torch/mod.ts";
import { checkpointPath, saveCheckpoint } from "../src/checkpoint/checkpoint.ts";
import { LAUNCHER_PID_VARIABLE } from "../src/train/launcher_link.ts";
import { assert, assertEquals } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

function spawn(args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--unstable-ffi", main, ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A small verified checkpoint at `step` in dir. */
function writeCheckpoint(dir: string, step: number): string {
  const weight = Tensor.fromArray(new Float32Array([1, 2, 3]), [3]);
  try {
    return saveCheckpoint(dir, { tensors: new Map([["model.w", weight]]), meta: { step } }, { keepLast: Infinity });
  } finally {
    weight.dispose();
  }
}

Deno.test("launch: a restart keeps a verified --resume PATH, follows this launch's checkpoints, else stops", () => {
  const root = Deno.makeTempDirSync({ prefix: "dc_restart_plan_" });
  try {
    const given = writeCheckpoint(`${root}/given`, 6);
    const out = `${root}/out`;
    Deno.mkdirSync(out);
    const startedAt = Date.now() + 2000; // everything written so far predates "this launch"
    const args = (resume: string) => ["--epochs", "3", "--output-dir", out, "--resume", resume];

    // No --resume, or --resume auto: the latest good checkpoint, as before.
    assertEquals(planRestart(["--output-dir", out], startedAt), {
      args: ["--output-dir", out, "--resume", "auto"],
      resume: "--resume auto",
    });
    assertEquals(planRestart(args("auto"), startedAt), { args: resumeArgs(args("auto")), resume: "--resume auto" });

    // A verified PATH is kept as it is.
    assertEquals(planRestart(args(given), startedAt), { args: args(given), resume: `--resume ${given} (verified)` });

    // A PATH that does not verify (flipped byte, missing, a FIFO) stops the launcher: `--resume auto` would find
    // nothing in the output folder and train from scratch.
    const bytes = Deno.readFileSync(given);
    bytes[bytes.length - 5] ^= 0xff;
    const corrupt = `${root}/corrupt.safetensors`;
    Deno.writeFileSync(corrupt, bytes);
    const fifo = `${root}/fifo.safetensors`;
    assertEquals(new Deno.Command("mkfifo", { args: [fifo] }).outputSync().code, 0, "mkfifo");
    for (
      const [path, reason] of [[corrupt, "digest"], [`${root}/missing.safetensors`, "No such file"], [
        fifo,
        "not a regular file",
      ]]
    ) {
      const plan = planRestart(args(path), startedAt);
      assert("stop" in plan, `${path}: expected a stop, got ${JSON.stringify(plan)}`);
      assert(plan.stop.startsWith(`--resume ${path} does not verify (`), plan.stop);
      assert(plan.stop.includes(reason) && plan.stop.endsWith("a restart would train from scratch"), plan.stop);
    }

    // A checkpoint already in the output folder before this launch (another run's) is not taken instead.
    const old = writeCheckpoint(out, 8);
    Deno.utimeSync(old, new Date(startedAt - 60_000), new Date(startedAt - 60_000));
    assert("stop" in planRestart(args(corrupt), startedAt), "another run's checkpoint must not stand in");
    Deno.removeSync(old);

    // A checkpoint this launch wrote past PATH's step wins, whether PATH verifies or not; one at or before it does not.
    const early = writeCheckpoint(out, 4);
    Deno.utimeSync(early, new Date(startedAt + 1000), new Date(startedAt + 1000));
    assertEquals(planRestart(args(given), startedAt), { args: args(given), resume: `--resume ${given} (verified)` });
    const later = writeCheckpoint(out, 10);
    Deno.utimeSync(later, new Date(startedAt + 1000), new Date(startedAt + 1000));
    for (const path of [given, corrupt]) {
      const plan = planRestart(args(path), startedAt);
      assertEquals(plan, {
        args: resumeArgs(args(path), later),
        resume: `--resume ${later} (step 10, the newest checkpoint this launch wrote)`,
      });
    }
    assertEquals(later, checkpointPath(out, 10));
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test({
  name: "launch: --max-restarts 2 -- --resume BAD stops with one line instead of training from scratch",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = Deno.makeTempDirSync({ prefix: "dc_restart_bad_" });
    try {
      const bad = `${root}/bad.safetensors`;
      Deno.writeTextFileSync(bad, "not a checkpoint");
      const out = `${root}/out`;
      const result = await spawn([
        "launch",
        "--nproc-per-node",
        "1",
        "--master-port",
        String(freePort()),
        "--max-restarts",
        "2",
        "--",
        "--max-steps",
        "2",
        "--eval-size",
        "0",
        "--threads",
        "1",
        "--output-dir",
        out,
        "--resume",
        bad,
      ]).output();
      const text = decoder.decode(result.stdout) + decoder.decode(result.stderr);
      assert(result.code !== 0, `the launcher must fail: ${text}`);
      const verdicts = text.split("\n").filter((line) => line.startsWith("[launch] rank 0 failed"));
      assertEquals(verdicts.length, 1, `one failure, no restart: ${text}`);
      assert(
        new RegExp(`; not restarting: --resume ${bad} does not verify \\(.+\\) and this launch wrote no checkpoint`)
          .test(verdicts[0]),
        verdicts[0],
      );
      assert(!/rank 0 started \(pid \d+, restart 1\)/.test(text), `no restart: ${text}`);
      const written = (() => {
        try {
          return [...Deno.readDirSync(out)].map((e) => e.name).filter((n) => n.startsWith("checkpoint-"));
        } catch {
          return [];
        }
      })();
      assertEquals(written, [], "nothing trained from scratch");
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});

/** Whether pid names a live process (a zombie waiting for its reaper counts as dead). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

Deno.test({
  name: "launch: kill -9 of the launcher leaves no rank alive 10 s later",
  ignore: !ProcessGroup.available("gloo"),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = Deno.makeTempDirSync({ prefix: "dc_launch_kill_" });
    // Long enough to be mid-training when killed; rank 0 prints nothing between the start and the kill (a write to
    // the dead launcher's pipe could end it by itself, which would prove nothing).
    const launcher = spawn([
      "launch",
      "--nproc-per-node",
      "2",
      "--master-port",
      String(freePort()),
      "--",
      "--max-steps",
      "100000",
      "--print-freq",
      "100000",
      "--batch-size",
      "2",
      "--eval-size",
      "0",
      "--threads",
      "1",
      "--dist-timeout",
      "600",
      "--output-dir",
      out,
    ]);
    let log = "";
    const reading = (async () => {
      for await (const chunk of launcher.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
    })();
    const stdout = (async () => {
      for await (const chunk of launcher.stdout.pipeThrough(new TextDecoderStream())) log += chunk;
    })();
    const pids = (): number[] => [...log.matchAll(/rank \d started \(pid (\d+)\)/g)].map((m) => Number(m[1]));
    try {
      // Both ranks past the rendezvous: rank 0 prints its plan line once the group has formed.
      const deadline = Date.now() + 180_000;
      while (!(pids().length === 2 && /\[rank 0\] detailclip train: /.test(log)) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assertEquals(pids().length, 2, `both ranks started: ${log}`);
      assert(/\[rank 0\] detailclip train: /.test(log), `the ranks formed their group: ${log}`);
      assert(pids().every(alive), `both ranks alive before the kill: ${log}`);
      Deno.kill(launcher.pid, "SIGKILL");
      await launcher.status;
      const killedAt = Date.now();
      while (pids().some(alive) && Date.now() - killedAt < 10_000) await new Promise((r) => setTimeout(r, 100));
      const survivors = pids().filter(alive);
      assertEquals(survivors, [], `ranks alive ${(Date.now() - killedAt) / 1000} s after the launcher died`);
    } finally {
      for (const pid of pids().filter(alive)) Deno.kill(pid, "SIGKILL");
      await reading;
      await stdout;
      Deno.removeSync(out, { recursive: true });
    }
  },
});

Deno.test({
  name: "launch: a rank whose launcher is already gone stops before it writes anything",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = Deno.makeTempDirSync({ prefix: "dc_launch_orphan_" });
    try {
      const out = `${root}/out`;
      const gone = Deno.pid + 1_000_000; // not this test process, the rank's parent
      const result = await spawn(["train", "--max-steps", "2", "--eval-size", "0", "--output-dir", out], {
        [LAUNCHER_PID_VARIABLE]: String(gone),
      }).output();
      const text = decoder.decode(result.stdout) + decoder.decode(result.stderr);
      assertEquals(result.code, 1, text);
      assertEquals(
        text.trim(),
        `detailclip train: the launcher (pid ${gone}) is gone; this rank stops before writing anything more`,
      );
      assert(
        !(() => {
          try {
            return Deno.statSync(out).isDirectory;
          } catch {
            return false;
          }
        })(),
        "the output folder was not even created",
      );
    } finally {
      Deno.removeSync(root, { recursive: true });
    }
  },
});
