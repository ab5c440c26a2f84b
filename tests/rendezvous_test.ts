// rendezvous_test.ts: the rendezvous against whatever holds the master port: a program that accepts and never
// answers, one that answers with its own banner, one that holds rank 0's port, and nothing at all. Each must end
// within the timeout (plus process start-up) with a message that names the program when it runs on this machine.
// The mechanics run in rendezvous_worker.ts on a store-only group (no collective backend needed, so they also run
// against a CPU torch 2.x wheel: tools/check_torch_wheel.sh tests/rendezvous_test.ts); a real store must still pass
// the probe; `train` turns the failure into one line. Then: the store listens on the master address, not on every
// interface (libtorch >= 2.4; 1.13 cannot be told an address, see native/src/dist.cpp).
import { ProcessGroup } from "../src/torch/dist.ts";
import { torchVersion } from "../src/torch/runtime.ts";
import { assert, assertEquals } from "./helpers.ts";

const main = new URL("../cli/main.ts", import.meta.url).pathname;
const worker = new URL("./rendezvous_worker.ts", import.meta.url).pathname;
const decoder = new TextDecoder();
// Process start-up (Deno, the CLI, libtorch) on a loaded machine, on top of the timeout itself.
const STARTUP_SLACK_S = 40;

function spawn(args: string[], env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), { args, env, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
}

function rankEnv(rank: number, port: number, host = "127.0.0.1"): Record<string, string> {
  return { RANK: String(rank), WORLD_SIZE: "2", MASTER_ADDR: host, MASTER_PORT: String(port) };
}

/** One store-only rank (rendezvous_worker.ts) with the given timeout. */
function storeRank(rank: number, port: number, timeoutS: number, host = "127.0.0.1"): Deno.ChildProcess {
  return spawn(["run", "--allow-all", "--unstable-ffi", worker], {
    ...rankEnv(rank, port, host),
    DC_TIMEOUT_MS: String(timeoutS * 1000),
  });
}

async function finish(child: Deno.ChildProcess): Promise<{ code: number; out: string; seconds: number }> {
  const started = performance.now();
  const result = await child.output();
  return {
    code: result.code,
    out: decoder.decode(result.stdout) + decoder.decode(result.stderr),
    seconds: (performance.now() - started) / 1000,
  };
}

/** The worker's failure message, after checking that it failed the way a rendezvous failure does. */
function workerError(result: { code: number; out: string }, what: string): string {
  assertEquals(result.code, 4, `${what}: exit status (${result.out})`);
  const error = JSON.parse(result.out.trim().split("\n").at(-1)!).error as string;
  assert(error.startsWith("dist init: rendezvous at 127.0.0.1:"), `${what}: ${error}`);
  return error;
}

/** A foreign TCP server on 127.0.0.1: `onConnection` gets each accepted connection. */
function foreignServer(onConnection: (conn: Deno.Conn) => void): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.push(conn);
        onConnection(conn);
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close: () => {
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      listener.close();
      void accepting;
    },
  };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

const test = (name: string, fn: () => Promise<void>, ignore = false) =>
  Deno.test({ name, ignore, sanitizeOps: false, sanitizeResources: false, fn });

// 127.0.0.1: the store bound to that address (libtorch >= 2.4); localhost: a name, so c10d's own wildcard listener
// (on 2.x c10d's libuv server, its default, crashed inside deno: see native/src/dist.cpp).
for (const host of ["127.0.0.1", "localhost"]) {
  test(`rendezvous: two ranks at ${host} pass the store probe and share keys through the store`, async () => {
    const port = freePort();
    const results = await Promise.all([0, 1].map((rank) => finish(storeRank(rank, port, 60, host))));
    for (const [rank, result] of results.entries()) {
      assertEquals(result.code, 0, `rank ${rank}: ${result.out}`);
      assertEquals(JSON.parse(result.out.trim().split("\n").at(-1)!).values, ["from rank 0", "from rank 1"]);
    }
  });
}

test("rendezvous: a program that accepts and never answers fails a rank within the timeout, named", async () => {
  const server = foreignServer(() => {}); // holds every connection open, says nothing
  try {
    const timeout = 4;
    const result = await finish(storeRank(1, server.port, timeout));
    const error = workerError(result, "silent listener");
    assert(result.seconds < timeout + STARTUP_SLACK_S, `ended after ${result.seconds} s (timeout ${timeout} s)`);
    assert(/is not a c10d store: it accepted the connection but sent no answer within/.test(error), error);
    assert(error.includes(`(pid ${Deno.pid}: `), `names the program holding the port: ${error}`);
  } finally {
    server.close();
  }
});

test("rendezvous: a program that answers with its own protocol is named with what it said", async () => {
  const banner = new TextEncoder().encode("SSH-2.0-OpenSSH_9.2p1 Debian\r\n");
  const server = foreignServer((conn) => void conn.write(banner).catch(() => {}));
  try {
    const result = await finish(storeRank(1, server.port, 600));
    const error = workerError(result, "banner listener");
    assert(result.seconds < STARTUP_SLACK_S, `ended after ${result.seconds} s (timeout 600 s)`);
    assert(/is not a c10d store: it answered 'SSH-2\.0-OpenSSH_9\.2p1 Debian\\x0d\\x0a'/.test(error), error);
  } finally {
    server.close();
  }
});

test("rendezvous: rank 0 on a port another program holds fails at once, naming the holder", async () => {
  const server = foreignServer(() => {});
  try {
    const result = await finish(storeRank(0, server.port, 600));
    const error = workerError(result, "busy port");
    assert(result.seconds < STARTUP_SLACK_S, `ended after ${result.seconds} s (timeout 600 s)`);
    assert(error.includes(`port ${server.port}`) && error.includes(`already in use by pid ${Deno.pid}: `), error);
  } finally {
    server.close();
  }
});

test("rendezvous: with nothing listening a rank gives up at the timeout", async () => {
  const timeout = 3;
  const result = await finish(storeRank(1, freePort(), timeout));
  const error = workerError(result, "nothing listening");
  assert(result.seconds >= timeout, `gave up after ${result.seconds} s, before the ${timeout} s timeout`);
  assert(result.seconds < timeout + STARTUP_SLACK_S, `ended after ${result.seconds} s (timeout ${timeout} s)`);
  assert(/nothing accepted a connection at 127\.0\.0\.1:\d+ within 3 s/.test(error), error);
});

test(
  "rendezvous: `train` against a silent listener ends within --dist-timeout with one line",
  async () => {
    const server = foreignServer(() => {});
    const dir = Deno.makeTempDirSync({ prefix: "dc_rdv_train_" });
    try {
      const timeout = 4;
      const child = spawn(
        ["run", "--allow-all", "--unstable-ffi", main, "train", "--dist-timeout", String(timeout), "--output-dir", dir],
        rankEnv(1, server.port),
      );
      const result = await finish(child);
      assertEquals(result.code, 4, result.out);
      assertEquals(result.out.trim().split("\n").length, 1, `one line: ${result.out}`);
      assert(/^detailclip train: dist init: rendezvous at 127\.0\.0\.1:\d+ failed on rank 1 of 2: /.test(result.out));
      assert(/is not a c10d store/.test(result.out) && !/\.cpp:\d+|c10::/.test(result.out), result.out);
      assert(result.seconds < timeout + STARTUP_SLACK_S, `ended after ${result.seconds} s (timeout ${timeout} s)`);
    } finally {
      server.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
  !ProcessGroup.available("gloo"), // train's ProcessGroup needs a collective backend
);

/** The local addresses (hex, as /proc/net/tcp writes them) of the sockets listening on `port`. */
function listeningAddresses(port: number): string[] {
  const out: string[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 4 || fields[3] !== "0A") continue;
      const [address, hexPort] = fields[1].split(":");
      if (parseInt(hexPort, 16) === port) out.push(address);
    }
  }
  return out;
}

const [major, minor] = torchVersion().split(".").map(Number);
const canBind = major > 2 || (major === 2 && minor >= 4);

test(
  "rendezvous: rank 0's store listens on the master address (127.0.0.1), not on every interface",
  async () => {
    const port = freePort();
    const rank0 = storeRank(0, port, 60); // waits for a rank 1 that never comes
    const result = finish(rank0);
    try {
      const deadline = Date.now() + 60_000;
      let addresses: string[] = [];
      while (addresses.length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        addresses = listeningAddresses(port);
      }
      assertEquals(addresses, ["0100007F"], `listening sockets on port ${port} (hex addresses)`);
    } finally {
      rank0.kill("SIGKILL");
      await result;
    }
  },
  !canBind, // libtorch before 2.4 cannot bind the store to an address: it listens on the wildcard
);
