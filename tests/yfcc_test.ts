// yfcc_test.ts: the safe pickle reader (src/data/pickle.ts) and the YFCC15M metadata converter against pickles written
// by /usr/bin/python3's own pickle module (protocols 2, 4 and 5), including shared objects (memo reads), big ints,
// bytes, non-ASCII text and more than 1,000 items (batched APPENDS, LONG_BINPUT); a pickle that would call os.system
// (GLOBAL/STACK_GLOBAL + REDUCE) must be refused without running anything.
import { PickleError, PickleTuple, readPickle } from "../src/data/pickle.ts";
import { readYfccMetadata, yfccCaption, yfccImagePath, type YfccRecord } from "../src/data/yfcc.ts";
import { readCsvTable } from "../src/data/csv.ts";
import { main as yfccToCsv } from "../cli/data_yfcc.ts";
import { assert, assertEquals, assertThrows } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = String.raw`
import os, pickle, sys
out = sys.argv[1]
shared = "shared title"
rows = []
for i in range(1500):
    h = "%032x" % (i * 2654435761 % (1 << 128))
    title = shared if i % 3 == 0 else "t%d caf\u00e9 \u6771\u4eac, \"quoted\"" % i
    desc = "" if i % 2 else "desc %d\nline two" % i
    rows.append((i if i != 7 else 1 << 40, h if i != 5 else h.encode(), title, desc))
rows.append("not a tuple")
rows.append((1, "abc", "too short"))
for proto in (2, 4, 5):
    with open(os.path.join(out, "p%d.pkl" % proto), "wb") as f:
        pickle.dump(rows, f, protocol=proto)
with open(os.path.join(out, "plain.pkl"), "wb") as f:
    pickle.dump({"a": [1, -2, 3.5, None, True, b"xy", (1,), (1, 2), (1, 2, 3), ()], "n": -(1 << 70)}, f, protocol=4)

class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "PWNED"),))
for proto in (2, 4):
    with open(os.path.join(out, "evil%d.pkl" % proto), "wb") as f:
        pickle.dump([(0, "abcdef", "t", "d"), Evil()], f, protocol=proto)
`;

const pythonMissing = (() => {
  try {
    return Deno.statSync(PYTHON).isFile ? null : `${PYTHON} is not a file`;
  } catch {
    return `${PYTHON} not found`;
  }
})();
if (pythonMissing !== null) console.warn(`yfcc tests skipped: ${pythonMissing}`);

let dir: string | null = null;
function fixtures(): string {
  if (dir === null) {
    dir = Deno.makeTempDirSync({ prefix: "dc_yfcc_test_" });
    const out = new Deno.Command(PYTHON, { args: ["-c", SCRIPT, dir], stderr: "piped" }).outputSync();
    if (!out.success) throw new Error(`pickle fixtures failed:\n${new TextDecoder().decode(out.stderr)}`);
    globalThis.addEventListener("unload", () => Deno.removeSync(dir!, { recursive: true }));
  }
  return dir;
}

function test(name: string, fn: () => void | Promise<void>): void {
  Deno.test({ name: `yfcc: ${name}`, ignore: pythonMissing !== null, fn });
}

function expected(i: number): { index: number | bigint; title: string; desc: string } {
  return {
    index: i === 7 ? 1n << 40n : i,
    title: i % 3 === 0 ? "shared title" : `t${i} café 東京, "quoted"`,
    desc: i % 2 ? "" : `desc ${i}\nline two`,
  };
}

for (const proto of [2, 4, 5]) {
  test(`protocol ${proto}: 1,500 records streamed in order, bad items counted`, () => {
    const records: YfccRecord[] = [];
    const skips = readYfccMetadata(Deno.readFileSync(`${fixtures()}/p${proto}.pkl`), (r) => records.push(r));
    assertEquals(records.length, 1500);
    assertEquals(skips.snapshot(), { yfcc_not_a_4_tuple: 1, yfcc_not_a_tuple: 1 });
    for (const i of [0, 1, 5, 7, 999, 1000, 1499]) {
      const r = records[i], e = expected(i);
      assertEquals(r.index, e.index === 1n << 40n ? 2 ** 40 : e.index, `index ${i}`);
      assertEquals(r.title, e.title, `title ${i}`);
      assertEquals(r.desc, e.desc, `desc ${i}`);
      assertEquals(yfccCaption(r), `${e.title} ${e.desc}`);
    }
    assertEquals(records[5].hash, records[5].hash.toLowerCase(), "a bytes hash decodes to text");
    assertEquals(yfccImagePath("abcdef0123"), "images/abc/def/abcdef0123.jpg");
  });
}

test("plain values: dicts, negative and big ints, floats, None, bools, bytes, tuples of every size", () => {
  const value = readPickle(Deno.readFileSync(`${fixtures()}/plain.pkl`));
  assert(value instanceof Map);
  const a = value.get("a");
  assert(Array.isArray(a));
  assertEquals(a.slice(0, 5), [1, -2, 3.5, null, true]);
  assertEquals([...(a[5] as Uint8Array)], [0x78, 0x79]);
  assertEquals(a.slice(6).map((t) => (t as PickleTuple).items.length), [1, 2, 3, 0]);
  assertEquals(value.get("n"), -(1n << 70n));
});

for (const proto of [2, 4]) {
  test(`protocol ${proto}: a pickle that calls os.system is refused, nothing runs`, () => {
    const bytes = Deno.readFileSync(`${fixtures()}/evil${proto}.pkl`);
    const error = assertThrows(() => readYfccMetadata(bytes, () => {}), PickleError);
    assert(/refusing pickle opcode (GLOBAL|STACK_GLOBAL) at byte \d+/.test(error.message), error.message);
    let exists = true;
    try {
      Deno.statSync(`${fixtures()}/PWNED`);
    } catch {
      exists = false;
    }
    assert(!exists, "the payload ran");
  });
}

test("truncated and garbage pickles end with a PickleError naming the offset", () => {
  const bytes = Deno.readFileSync(`${fixtures()}/p4.pkl`);
  for (const cut of [1, 2, 11, 100, bytes.length - 1]) {
    assertThrows(() => readPickle(bytes.subarray(0, cut)), PickleError);
  }
  const error = assertThrows(() => readPickle(new Uint8Array([0x80, 0x02, 0x49, 0x31, 0x0a, 0x2e])), PickleError);
  assert(error.message.includes("unsupported pickle opcode 0x49 'I' at byte 2"), error.message);
});

test("data yfcc-to-csv writes a manifest the CSV source reads back (captions with quotes, commas, newlines)", async () => {
  const csv = `${fixtures()}/yfcc.csv`;
  const log = console.log;
  console.log = () => {};
  try {
    assertEquals(await yfccToCsv(["--metadata", `${fixtures()}/p5.pkl`, "--root", "/data/yfcc", "--out", csv]), 0);
  } finally {
    console.log = log;
  }
  const table = readCsvTable({ path: csv });
  assertEquals(table.size, 1500);
  assertEquals(table.caption(2, 0), `t2 café 東京, "quoted" desc 2\nline two`);
  assertEquals(table.caption(3, 0), "shared title ");
  const first = Deno.readTextFileSync(csv).split("\n")[1];
  assert(first.startsWith("/data/yfcc/images/"), first);
});
