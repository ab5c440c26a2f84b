// usage_error.ts: the error a command throws for bad options; main.ts prints it as one line and exits with 2.
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
