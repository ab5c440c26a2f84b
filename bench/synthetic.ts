// bench/synthetic.ts: the built-in synthetic source's batch generation (32 samples, two views, 64 px), the data
// side of the default training run. Usage: deno run -A bench/synthetic.ts
import { syntheticBatchArrays } from "../src/data/synthetic.ts";

const indices = Array.from({ length: 32 }, (_, i) => i);
for (let r = 0; r < 5; r++) syntheticBatchArrays("train", indices.map((i) => i + 32 * r)); // JIT warm-up
const times: number[] = [];
for (let r = 0; r < 40; r++) {
  const start = performance.now();
  syntheticBatchArrays("train", indices.map((i) => i + 32 * (r + 5)));
  times.push(performance.now() - start);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ batch: 32, views: 2, size: 64, median_ms: times[20], best_ms: times[0] }));
