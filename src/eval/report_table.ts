// report_table.ts: evaluation results as the aligned text tables `deno task eval` prints. Percentages to one decimal;
// NaN (a class absent from the test set) prints as "n/a" rather than a number that hides it.

/** Rows of [metric, value] as an aligned two-column table. */
export function formatTable(rows: [string, string][]): string {
  const width = Math.max(6, ...rows.map(([k]) => k.length));
  const valueWidth = Math.max(5, ...rows.map(([, v]) => v.length));
  const rule = "-".repeat(width + valueWidth + 3);
  return [rule, ...rows.map(([k, v]) => `${k.padEnd(width)} | ${v.padStart(valueWidth)}`), rule].join("\n");
}

/** A header and rows as aligned columns (the first `textColumns` left-aligned, the numbers right-aligned). */
export function formatColumns(header: string[], rows: string[][], textColumns = 1): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]): string =>
    cells.map((cell, c) => (c < textColumns ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(" | ");
  const rule = "-".repeat(widths.reduce((a, b) => a + b + 3, -3));
  return [rule, line(header), rule, ...rows.map(line), rule].join("\n");
}

/** A percentage with one decimal, "n/a" for NaN. */
export function pct(x: number): string {
  return Number.isNaN(x) ? "n/a" : x.toFixed(1);
}

/** "0", or the total with its reasons: "3 (image_missing 2, image_corrupt 1)". */
export function skippedText(total: number, reasons: Record<string, number>): string {
  if (total === 0) return "0";
  return `${total} (${Object.entries(reasons).map(([r, n]) => `${r} ${n}`).join(", ")})`;
}

/** The first name of each class (a list-valued name is synonyms; pictures show the first). */
export function displayNames(names: readonly (string | readonly string[])[]): string[] {
  return names.map((n) => (typeof n === "string" ? n : n[0]));
}
