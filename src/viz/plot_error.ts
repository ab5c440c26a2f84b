// plot_error.ts: the one error every figure function throws for input it cannot draw (ragged or non-square matrices,
// counts that are negative or not finite, recalls outside 0–100, empty series), naming the figure, the input and the
// offending place, so a caller's bug reads as such rather than as a garbled picture.
export class PlotError extends Error {
  /** The figure that refused, e.g. "confusion matrix". */
  readonly figure: string;

  constructor(figure: string, message: string) {
    super(`${figure}: ${message}`);
    this.name = "PlotError";
    this.figure = figure;
  }
}
