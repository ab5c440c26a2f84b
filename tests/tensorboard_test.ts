// tensorboard_test.ts: the event-file writer of `--report-to tensorboard` (src/train/tensorboard.ts). CRC-32C against
// its published check values, the TFRecord framing against a record checked by hand, and the files read back by
// TensorBoard's own EventAccumulator: tags, steps and float32 values, and a resumed run's SessionLog START purging
// the abandoned timeline's later points.
import { crc32c, maskedCrc32c, TensorBoardWriter, tfRecord } from "../src/train/tensorboard.ts";
import { assert, assertEquals } from "./helpers.ts";
import { noTensorBoard, readTensorBoard } from "./tensorboard_helpers.ts";

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

Deno.test("crc32c matches the published check values (RFC 3720 / iSCSI)", () => {
  assertEquals(crc32c(ascii("123456789")), 0xe3069283);
  assertEquals(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assertEquals(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43); // 32 bytes of ones
  assertEquals(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e); // incrementing
  assertEquals(crc32c(new Uint8Array(0)), 0);
});

Deno.test("tfRecord frames data as length, masked CRC of the length, data, masked CRC of the data", () => {
  const data = ascii("hello");
  const record = tfRecord(data);
  assertEquals(record.length, 8 + 4 + 5 + 4);
  const view = new DataView(record.buffer);
  assertEquals(view.getBigUint64(0, true), 5n);
  assertEquals(view.getUint32(8, true), maskedCrc32c(record.subarray(0, 8)));
  assertEquals([...record.subarray(12, 17)], [...data]);
  assertEquals(view.getUint32(17, true), maskedCrc32c(data));
  // The mask: rotate right 15 and add 0xa282ead8 (TensorFlow's crc32c::Mask), here for crc32c("123456789").
  const crc = 0xe3069283;
  assertEquals(maskedCrc32c(ascii("123456789")), ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0);
});

Deno.test("a disabled writer (ranks > 0) creates nothing", () => {
  const dir = Deno.makeTempDirSync();
  const writer = new TensorBoardWriter(`${dir}/tb`, { enabled: false });
  writer.scalars(1, { "train/loss": 1 });
  writer.close();
  assertEquals(writer.path, null);
  let exists = true;
  try {
    Deno.statSync(`${dir}/tb`);
  } catch {
    exists = false;
  }
  assert(!exists, "a disabled writer made the folder");
});

Deno.test({
  name: "TensorBoard's EventAccumulator reads the scalars back; a resume purges the abandoned steps",
  ignore: noTensorBoard,
  fn() {
    const dir = Deno.makeTempDirSync();
    const first = new TensorBoardWriter(dir, { now: () => 1000 });
    first.scalars(1, { "train/loss": 2.5, "train/lr": 1e-3, "skip/nan": Number.NaN });
    first.scalars(2, { "train/loss": 2.25, "train/lr": 2e-3 });
    first.scalars(3, { "train/loss": 2.0, "train/lr": 3e-3 });
    first.close();
    const before = readTensorBoard(dir);
    assertEquals(before.file_version, 2);
    assertEquals(Object.keys(before.tags).sort(), ["train/loss", "train/lr"]); // NaN entries are left out
    assertEquals(before.tags["train/loss"], [[1, 2.5], [2, 2.25], [3, 2]]);
    assertEquals(before.tags["train/lr"].map(([s]) => s), [1, 2, 3]);
    assertEquals(before.tags["train/lr"][0][1], Math.fround(1e-3)); // simple_value is a float32
    // Resumed from the checkpoint of step 2: the first file's points after step 2 are dropped.
    const resumed = new TensorBoardWriter(dir, { resumeStep: 2, now: () => 1000 });
    resumed.scalars(3, { "train/loss": 1.5 });
    resumed.close();
    assert(resumed.path !== first.path, "the resumed writer reused the first file");
    const after = readTensorBoard(dir);
    assertEquals(after.tags["train/loss"], [[1, 2.5], [2, 2.25], [3, 1.5]]);
    assertEquals(after.tags["train/lr"].map(([s]) => s), [1, 2]);
    // A fresh run in the same folder (--overwrite) replaces the earlier curves whole.
    const fresh = new TensorBoardWriter(dir, { now: () => 1001 });
    fresh.scalars(1, { "train/loss": 9 });
    fresh.close();
    const replaced = readTensorBoard(dir);
    assertEquals(replaced.tags["train/loss"], [[1, 9]]);
    assertEquals(replaced.tags["train/lr"] ?? [], []);
  },
});
