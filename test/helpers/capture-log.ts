import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Logger } from '../../src/log/logger.js'

/** A pino logger whose JSON lines land, parsed, in `lines`: for in-process tests. */
export function captureLog(level = 'info'): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line !== '') lines.push(JSON.parse(line))
      cb()
    },
  })
  return { log: pino({ level }, sink) as unknown as Logger, lines }
}
