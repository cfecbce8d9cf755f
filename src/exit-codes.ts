import { ConfigErrors } from './errors.js'

/** The command line's exit codes, as the README's command table documents them. */
export const EXIT_OK = 0
/** `run`: a listener could not be bound. `check`: a name is blocked. `reload`: no daemon found. */
export const EXIT_FAILED = 1
/** A configuration (or a command line) that is not valid. */
export const EXIT_CONFIG = 2
/** A bug: an exception nobody expected. */
export const EXIT_INTERNAL = 70

/** Prints configuration errors one per line (`file:line:col: message`) and returns EXIT_CONFIG; anything else is a bug and rethrown. */
export function configFailure(e: unknown): number {
  if (e instanceof ConfigErrors) {
    for (const err of e.errors) process.stderr.write(err.message + '\n')
    return EXIT_CONFIG
  }
  throw e
}
