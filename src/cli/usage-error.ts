/** A command line that cannot be acted on (unknown option, missing selection): exit code 2. */
export class UsageError extends Error {
  /** Print the usage text too (for syntax errors; a message that lists the valid choices needs none). */
  readonly showUsage: boolean;
  constructor(message: string, opts: { showUsage?: boolean } = {}) {
    super(message);
    this.name = 'UsageError';
    this.showUsage = opts.showUsage ?? false;
  }
}
