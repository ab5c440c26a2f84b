// rendezvous_worker.ts: one rank of rendezvous_test.ts (not a test itself). Joins a store-only group (backend code 2:
// the TCPStore rendezvous without a collective backend, so it runs on builds without Gloo, e.g. a CPU torch wheel)
// from RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and DC_TIMEOUT_MS, then swaps one key with the other ranks through
// the store. Prints one JSON line: {"values": [...]} on success, {"error": "..."} (and exit status 4) on failure.
import { lastError, native } from "../src/torch/lib.ts";

const env = (name: string): string => Deno.env.get(name) ?? "";
const cString = (s: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(s + "\0");
const [rank, world] = [Number(env("RANK")), Number(env("WORLD_SIZE"))];
const lib = native();
const group = lib.dc_dist_init(
  cString(env("MASTER_ADDR")),
  BigInt(env("MASTER_PORT")),
  BigInt(rank),
  BigInt(world),
  2,
  BigInt(env("DC_TIMEOUT_MS")),
);
if (group < 0n) {
  console.log(JSON.stringify({ error: lastError() }));
  Deno.exit(4);
}
const mine = new TextEncoder().encode(`from rank ${rank}`);
if (lib.dc_dist_store_set(group, cString(`test/${rank}`), mine, BigInt(mine.length)) !== 0) {
  throw new Error(lastError());
}
const values: string[] = [];
for (let r = 0; r < world; r++) {
  const buffer = new Uint8Array(64);
  const size = lib.dc_dist_store_get(group, cString(`test/${r}`), buffer, BigInt(buffer.length));
  if (size < 0n) throw new Error(lastError());
  values.push(new TextDecoder().decode(buffer.subarray(0, Number(size))));
}
// Rank 0 hosts the store: it leaves last, once every rank has read every key.
const done = new Uint8Array([1]);
lib.dc_dist_store_set(group, cString(`done/${rank}`), done, 1n);
if (rank === 0) {
  for (let r = 1; r < world; r++) lib.dc_dist_store_get(group, cString(`done/${r}`), new Uint8Array(1), 1n);
}
console.log(JSON.stringify({ values }));
