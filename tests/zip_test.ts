// zip_test.ts: the zip reader against archives written by Python's zipfile (stored, deflated, zip64, UTF-8 names),
// and its errors on truncated and corrupted archives. Python writes the fixtures in the test so nothing binary is
// committed; the tests are ignored, with the reason, when /usr/bin/python3 is absent.
import { ZIP_DEFLATED, ZIP_STORED, ZipArchive, ZipError } from "../src/formats/zip.ts";
import { assert, assertEquals, commandMissing, missingTool } from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
const noPython = missingTool("/usr/bin/python3", commandMissing(PYTHON));

// Members: a stored and a deflated text, 200 KiB of pseudo-random bytes (deflate cannot shrink them), an empty
// file and a UTF-8 name. The same members go into a plain and a forced-zip64 archive.
const WRITER = `
import random, sys, zipfile
out, zip64 = sys.argv[1], sys.argv[2] == "1"
random.seed(7)
blob = bytes(random.getrandbits(8) for _ in range(200 * 1024))
with zipfile.ZipFile(out, "w") as z:
    def add(name, data, method):
        info = zipfile.ZipInfo(name)
        info.compress_type = method
        with z.open(info, "w", force_zip64=zip64) as f:
            f.write(data)
    add("a/stored.txt", b"hello stored " * 100, zipfile.ZIP_STORED)
    add("a/deflated.txt", b"hello deflated " * 1000, zipfile.ZIP_DEFLATED)
    add("blob.bin", blob, zipfile.ZIP_DEFLATED)
    add("empty", b"", zipfile.ZIP_STORED)
    add("caf\\u00e9.txt", "\\u00e9t\\u00e9".encode(), zipfile.ZIP_STORED)
    z.comment = b"a trailing comment"
sys.stdout.buffer.write(blob)
`;

function writeArchive(dir: string, zip64: boolean): { path: string; blob: Uint8Array } {
  const path = `${dir}/test${zip64 ? "64" : ""}.zip`;
  const result = new Deno.Command(PYTHON, { args: ["-c", WRITER, path, zip64 ? "1" : "0"], stderr: "piped" })
    .outputSync();
  if (!result.success) throw new Error(new TextDecoder().decode(result.stderr));
  return { path, blob: result.stdout };
}

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

for (const zip64 of [false, true]) {
  Deno.test({
    name: `zip: reads stored, deflated, empty and UTF-8-named members${zip64 ? " (zip64)" : ""}`,
    ignore: noPython,
    fn() {
      const dir = Deno.makeTempDirSync();
      try {
        const { path, blob } = writeArchive(dir, zip64);
        using zip = new ZipArchive(path);
        assertEquals([...zip.entries.keys()], ["a/stored.txt", "a/deflated.txt", "blob.bin", "empty", "café.txt"]);
        assertEquals(zip.entry("a/stored.txt").method, ZIP_STORED);
        assertEquals(zip.entry("a/deflated.txt").method, ZIP_DEFLATED);
        assertEquals(text(zip.read("a/stored.txt")), "hello stored ".repeat(100));
        assertEquals(text(zip.read("a/deflated.txt")), "hello deflated ".repeat(1000));
        assert(zip.entry("a/deflated.txt").compressedSize < 1000, "the deflated member is compressed");
        const got = zip.read("blob.bin");
        assertEquals(got.length, blob.length);
        assert(got.every((b, i) => b === blob[i]), "blob.bin round-trips byte for byte");
        assertEquals(zip.read("empty").length, 0);
        assertEquals(text(zip.read("café.txt")), "été");
        // A stored member's bytes sit at dataOffset in the file itself (what the native loader reads directly).
        const stored = zip.entry("a/stored.txt");
        const file = Deno.readFileSync(path);
        const at = zip.dataOffset(stored);
        assertEquals(text(file.subarray(at, at + stored.size)), "hello stored ".repeat(100));
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "zip: missing members, truncation, corruption and non-zips are ZipErrors that name the file",
  ignore: noPython,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const { path } = writeArchive(dir, false);
      const bytes = Deno.readFileSync(path);
      const expectError = (p: string, fragment: string, action: (zip: ZipArchive) => void = () => {}): void => {
        let caught: unknown;
        try {
          using zip = new ZipArchive(p);
          action(zip);
        } catch (error) {
          caught = error;
        }
        assert(caught instanceof ZipError, `${fragment}: expected a ZipError, got ${caught}`);
        assert(caught.message.includes(p), `the message names the file: ${caught.message}`);
        assert(caught.message.includes(fragment), `'${fragment}' in: ${caught.message}`);
      };
      expectError(path, "no member 'nope'", (zip) => zip.read("nope"));
      expectError(`${dir}/absent.zip`, "cannot open");
      Deno.writeFileSync(`${dir}/text.zip`, new TextEncoder().encode("not a zip at all, just some text here"));
      expectError(`${dir}/text.zip`, "no end-of-central-directory");
      // Cut off the tail: the directory is gone.
      Deno.writeFileSync(`${dir}/cut.zip`, bytes.subarray(0, bytes.length - 200));
      expectError(`${dir}/cut.zip`, "end-of-central-directory");
      // Flip a byte inside the stored member's data: its CRC no longer matches.
      const flipped = bytes.slice();
      {
        using zip = new ZipArchive(path);
        flipped[zip.dataOffset(zip.entry("a/stored.txt")) + 5] ^= 0xff;
      }
      Deno.writeFileSync(`${dir}/flip.zip`, flipped);
      expectError(`${dir}/flip.zip`, "CRC-32 mismatch", (zip) => zip.read("a/stored.txt"));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "zip: 400 archives with mutated directories either read or fail with a ZipError, nothing else",
  ignore: noPython,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const { path } = writeArchive(dir, true);
      const bytes = Deno.readFileSync(path);
      // Mutations land in the last 600 bytes: the central directory, the zip64 records and the EOCD.
      let seed = 12345;
      const next = (n: number): number => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return seed % n;
      };
      let refused = 0;
      for (let trial = 0; trial < 400; trial++) {
        const mutated = bytes.slice();
        for (let k = 0; k < 1 + next(4); k++) mutated[bytes.length - 1 - next(600)] = next(256);
        const p = `${dir}/m.zip`;
        Deno.writeFileSync(p, mutated);
        try {
          using zip = new ZipArchive(p);
          for (const entry of zip.entries.values()) zip.read(entry);
        } catch (error) {
          if (!(error instanceof ZipError)) throw new Error(`trial ${trial}: ${error}`, { cause: error });
          refused += 1;
        }
      }
      assert(refused > 100, `most mutations are refused (${refused} of 400)`);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
