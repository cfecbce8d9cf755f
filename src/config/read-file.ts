/**
 * Reading a configuration file with a size bound, checked before anything is parsed.
 * The YAML parser costs about 1 s and 50 MB of RSS per MB of list (measured: a
 * 16.7 MB block list of 700 k names, 16 s and 850 MB; bench/RESULTS.md), so the
 * bound is what keeps `validate`, start and reload of a hostile or runaway file short.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { ConfigError } from '../errors.js'

/** The default bound: 16 MiB, about 700 k allow entries of 20-character names. */
export const DEFAULT_MAX_CONFIG_BYTES = 16 * 1024 * 1024
/** What EGRESSD_MAX_CONFIG_BYTES may raise it to (V8's strings stop at 512 MiB). */
export const MAX_CONFIG_BYTES_CEILING = 256 * 1024 * 1024
export const MAX_CONFIG_BYTES_ENV = 'EGRESSD_MAX_CONFIG_BYTES'

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }

/**
 * The bound for this process: EGRESSD_MAX_CONFIG_BYTES (bytes, or with a K/M/G
 * suffix: 64M) or the default. An environment variable, not a key: the file is what
 * is being bounded, and every command (`run`, `validate`, `check`, `reload`) reads it.
 * Returns an error message for a value that is not a size in range.
 */
export function maxConfigBytes(env: NodeJS.ProcessEnv = process.env): number | string {
  const text = env[MAX_CONFIG_BYTES_ENV]
  if (text === undefined || text === '') return DEFAULT_MAX_CONFIG_BYTES
  const m = /^([0-9]{1,12})\s*([kmg]?)(?:i?b)?$/i.exec(text.trim())
  const bytes = m ? Number(m[1]) * UNITS[m[2]!.toLowerCase()]! : NaN
  if (!(bytes >= 1024 && bytes <= MAX_CONFIG_BYTES_CEILING)) {
    return `${MAX_CONFIG_BYTES_ENV}=${JSON.stringify(text.slice(0, 40))} is not a size from 1K to 256M (bytes, or with a K, M or G suffix)`
  }
  return bytes
}

/**
 * The file's text, or a ConfigError at `file:1:1`. A regular file larger than the
 * bound is refused from its size alone; anything else (a pipe, a device, a file that
 * grows while being read) is read in chunks and refused once it passes the bound.
 */
export function readConfigText(file: string, limit: number): string {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message
    throw new ConfigError(file, 1, 1, `cannot read configuration: ${reason}`)
  }
  const tooBig = (size: number | null) =>
    new ConfigError(file, 1, 1, `configuration is ${size === null ? 'larger than' : `${size} bytes, more than`} the limit of ${limit} bytes` +
      ` (${MAX_CONFIG_BYTES_ENV} raises it; docs/configuration.md)`)
  try {
    const st = fstatSync(fd)
    if (st.isDirectory()) throw new ConfigError(file, 1, 1, 'cannot read configuration: it is a directory')
    if (st.isFile() && st.size > limit) throw tooBig(st.size)
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const chunk = Buffer.allocUnsafe(Math.min(1 << 20, limit + 1 - total))
      const n = readSync(fd, chunk, 0, chunk.length, null)
      if (n === 0) break
      chunks.push(n === chunk.length ? chunk : chunk.subarray(0, n))
      total += n
      if (total > limit) throw tooBig(null)
    }
    return Buffer.concat(chunks, total).toString('utf8')
  } catch (e) {
    if (e instanceof ConfigError) throw e
    throw new ConfigError(file, 1, 1, `cannot read configuration: ${(e as Error).message}`)
  } finally {
    closeSync(fd)
  }
}
