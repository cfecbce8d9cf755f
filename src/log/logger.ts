import { pino, type Logger } from 'pino'

export type { Logger }

/**
 * JSON lines on stdout, written synchronously: pino's default asynchronous
 * destination may lose the last lines on SIGTERM (docs/design.md, dependencies), and under
 * systemd those are the lines an operator reads.
 */
export function createLogger(level: string): Logger {
  return pino(
    {
      level,
      base: { service: 'egressd' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: 1, sync: true }),
  )
}
