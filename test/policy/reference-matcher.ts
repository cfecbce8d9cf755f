/**
 * The naive matcher the compiled trie is held to: lowercase, strip one dot, check the
 * bytes, split, look suffixes up in Maps. Same deciding-rule semantics as docs/design.md;
 * returns rule ids (the compiled Policy numbers its rules identically: entries in
 * order, each entry's expansion in order).
 */
import { expandPattern } from '../../src/policy/pattern.js'
import type { PolicyEntry } from '../../src/policy/types.js'

const LABEL = /^[a-z0-9_-]{1,63}$/

export class ReferenceMatcher {
  // First rule id per name: a later duplicate never decides.
  private readonly exactAllow = new Map<string, number>()
  private readonly exactDeny = new Map<string, number>()
  private readonly wildAllow = new Map<string, number>()
  private readonly wildDeny = new Map<string, number>()
  readonly size: number

  constructor(entries: readonly PolicyEntry[]) {
    let id = 0
    for (const e of entries) {
      const x = expandPattern(e.entry)
      const map =
        e.action === 'deny' ? (x.wildcard ? this.wildDeny : this.exactDeny) : x.wildcard ? this.wildAllow : this.exactAllow
      for (const name of x.names) {
        if (!map.has(name)) map.set(name, id)
        id++
      }
    }
    this.size = id
  }

  /** Labels of a valid name (lowercased), or null. */
  static labels(name: string): string[] | null {
    if (name.endsWith('.')) name = name.slice(0, -1)
    if (name === '' || name.length > 253) return null
    const labels = name.split('.')
    for (const l of labels) if (!LABEL.test(l.toLowerCase()) || /[^\x00-\x7f]/.test(l)) return null
    return labels.map((l) => l.toLowerCase())
  }

  /** Deciding rule id or -1. */
  match(name: string): number {
    const labels = ReferenceMatcher.labels(name)
    if (labels === null) return -1
    const deny = this.decide(labels, this.exactDeny, this.wildDeny)
    return deny !== -1 ? deny : this.decide(labels, this.exactAllow, this.wildAllow)
  }

  hasAllowedBelow(name: string): boolean {
    const bare = name.endsWith('.') ? name.slice(0, -1) : name
    if (bare === '') return this.exactAllow.size + this.wildAllow.size > 0
    const labels = ReferenceMatcher.labels(name)
    if (labels === null) return false
    const n = labels.join('.')
    for (const e of this.exactAllow.keys()) if (e.endsWith('.' + n)) return true
    for (const w of this.wildAllow.keys()) if (w === n || w.endsWith('.' + n)) return true
    // A child of the name no exact rule names: allowed by wildcards at or above the name alone.
    if (n.length + 2 > 253) return false
    const child = ['\u0000', ...labels]
    return this.decide(child, new Map(), this.wildDeny) === -1 && this.decide(child, new Map(), this.wildAllow) !== -1
  }

  /** Wire form decoded naively: any label that is not a valid text label (a dot in it) fails. */
  static decodeWire(buf: Uint8Array, offset: number): string[] | null {
    const labels: string[] = []
    if (!Number.isInteger(offset) || offset < 0) return null
    let p = offset
    let total = 0
    for (;;) {
      if (p >= buf.length) return null
      const len = buf[p]!
      total += 1 + len
      if (total > 255) return null
      if (len === 0) return labels
      if (len > 63 || p + 1 + len >= buf.length) return null
      labels.push(String.fromCharCode(...buf.subarray(p + 1, p + 1 + len)))
      p += 1 + len
    }
  }

  matchWire(buf: Uint8Array, offset: number): number {
    const labels = ReferenceMatcher.decodeWire(buf, offset)
    if (labels === null || labels.length === 0 || labels.some((l) => !LABEL.test(l.toLowerCase()))) return -1
    return this.match(labels.join('.'))
  }

  hasAllowedBelowWire(buf: Uint8Array, offset: number): boolean {
    const labels = ReferenceMatcher.decodeWire(buf, offset)
    if (labels === null || labels.some((l) => !LABEL.test(l.toLowerCase()))) return false
    return this.hasAllowedBelow(labels.length === 0 ? '.' : labels.join('.'))
  }

  private decide(labels: string[], exact: Map<string, number>, wild: Map<string, number>): number {
    const e = exact.get(labels.join('.'))
    if (e !== undefined) return e
    // Longest proper suffix first: the deepest wildcard is the most specific.
    for (let k = 1; k < labels.length; k++) {
      const w = wild.get(labels.slice(k).join('.'))
      if (w !== undefined) return w
    }
    return -1
  }
}

/** Text name → wire bytes (labels as Latin-1 bytes; a char above 0xff becomes its UTF-8 bytes). */
export function toWire(name: string): Uint8Array {
  if (name.endsWith('.')) name = name.slice(0, -1)
  const parts = name === '' ? [] : name.split('.')
  return labelsToWire(parts.map((l) => (/[^\x00-\xff]/.test(l) ? Buffer.from(l, 'utf8') : Buffer.from(l, 'latin1'))))
}

/** Raw labels → wire bytes, no checks: the caller may build malformed names on purpose. */
export function labelsToWire(labels: readonly Uint8Array[]): Uint8Array {
  const out: number[] = []
  for (const l of labels) out.push(l.length & 0xff, ...l)
  out.push(0)
  return Uint8Array.from(out)
}
