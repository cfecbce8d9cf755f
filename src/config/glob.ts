/**
 * The files an `include:` item names. Node 20 has no fs.glob, and an include needs very
 * little of one: `*` (any run of characters but `/`) and `?` (one character) in the last
 * path part only, as in `/etc/egressd/allow.d/*.yaml`. A leading `.` is matched only by
 * a pattern that starts with `.` (editor and package-manager leftovers such as
 * `.x.yaml.swp` or `.#x.yaml` stay out), only regular files count (a directory or socket
 * that matches is skipped), and matches come in byte order of their names, as
 * `run-parts` and `conf.d` directories order them.
 */
import { opendirSync, statSync } from 'node:fs'
import { basename, dirname, isAbsolute, join } from 'node:path'

/**
 * At most this many files per configuration, all `include:` items and nested includes
 * together. The listing stops at the first match past it, so a directory of a million
 * matching files costs one partial listing, not a million opens (documented in
 * docs/configuration.md).
 */
export const MAX_INCLUDE_FILES = 256

export interface IncludeMatch {
  /** The files, as paths relative to the same base as the pattern (or absolute). */
  readonly files: readonly string[]
  /** Whether the pattern held `*` or `?`: a glob may match nothing; a named file must exist. */
  readonly glob: boolean
}

/**
 * `pattern` relative to `baseDir` (the including file's directory) unless absolute.
 * Returns the files or an error message. At most `max` files (else an error).
 */
export function expandInclude(pattern: string, baseDir: string, max = MAX_INCLUDE_FILES): IncludeMatch | string {
  if (pattern.length === 0) return 'an empty path'
  if (pattern.includes('\0')) return 'a path with a NUL character'
  const path = isAbsolute(pattern) ? pattern : join(baseDir, pattern)
  const dir = dirname(path)
  const last = basename(path)
  if (/[*?]/.test(dir)) return '"*" and "?" may only be in the last part of an include path (e.g. /etc/egressd/allow.d/*.yaml)'
  if (!/[*?]/.test(last) || pattern.endsWith('/')) return { files: [path], glob: false }
  const re = globRegExp(last)
  const names: string[] = []
  let listing
  try {
    listing = opendirSync(dir)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    // A directory that is not there holds no matches: allow.d may be created later.
    if (code === 'ENOENT' || code === 'ENOTDIR') return { files: [], glob: true }
    return `cannot list ${dir}: ${(e as Error).message}`
  }
  try {
    for (let d = listing.readSync(); d !== null; d = listing.readSync()) {
      if (!re.test(d.name)) continue
      if (names.length >= max) return `matches more than ${max} files in ${dir} (at most ${max} files are included in all)`
      names.push(d.name)
    }
  } finally {
    listing.closeSync()
  }
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  const files: string[] = []
  for (const name of names) {
    const file = join(dir, name)
    try {
      if (statSync(file).isFile()) files.push(file)
    } catch {
      // A dangling symlink or a file removed while listing: not a file to include.
    }
  }
  return { files, glob: true }
}

function globRegExp(pattern: string): RegExp {
  let re = pattern.startsWith('.') ? '^' : '^(?!\\.)'
  for (const ch of pattern) {
    if (ch === '*') re += '[^/]*'
    else if (ch === '?') re += '[^/]'
    else re += ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  }
  return new RegExp(re + '$', 'su')
}
