// data_error.ts: a data set that cannot be used as a whole (no usable sample, an unreadable manifest, no shards);
// single bad samples are skipped and counted instead. The CLI ends on it with one line and exit status 5.

export class DataError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DataError";
  }
}
