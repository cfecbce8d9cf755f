/**
 * One base error with a stable `code` (as undici does), a subclass per cause.
 * Codes are part of the interface: logs and tests match on them, never on messages.
 */
export class EgressdError extends Error {
  constructor(readonly code: string, message: string) {
    super(message)
    this.name = new.target.name
  }
}

/** A problem in a configuration file, located as `file:line:col`. */
export class ConfigError extends EgressdError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly col: number,
    readonly detail: string,
  ) {
    super('ECONFIG', `${file}:${line}:${col}: ${detail}`)
  }
}

/** Several configuration problems found in one pass; `errors` keeps each one. */
export class ConfigErrors extends EgressdError {
  constructor(readonly errors: readonly ConfigError[]) {
    super('ECONFIG', errors.map((e) => e.message).join('\n'))
  }
}
