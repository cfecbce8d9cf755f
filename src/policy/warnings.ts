/**
 * Configuration warnings: entries that change nothing, and names that cannot exist.
 * Pure; run at load and reload, never per query.
 */
import { domainToASCII, domainToUnicode } from 'node:url'
import { expandPattern } from './pattern.js'
import { formatPort, type PolicyEntry, type PortSpec } from './types.js'

export interface PolicyWarning {
  /** The entry that changes nothing (the later of two duplicates, the narrower of two rules). */
  entryIndex: number
  kind: 'duplicate' | 'shadowed' | 'impossible'
  /** Names the other entry and its source, or the label that cannot exist. */
  message: string
}

/**
 * Duplicates (the same normalized name, wildcard or not, with the same action), and
 * names that a wildcard of the same action already covers: `api.example.com` or
 * `*.api.example.com` under `*.example.com`. A narrower allow rule with other ports is
 * not shadowed: it decides which ports the firewall sink opens. Names no one can
 * register (impossibleLabel) are reported once per entry. Entries that do not parse are
 * skipped; compilePolicy reports them.
 */
export function findWarnings(entries: readonly PolicyEntry[]): PolicyWarning[] {
  const expanded = entries.map((e) => {
    try {
      return expandPattern(e.entry)
    } catch {
      return null
    }
  })
  // First entry per (action, wildcard, name), and per (action, wildcard suffix).
  const first = new Map<string, number>()
  const wildcards = new Map<string, number>()
  for (let i = 0; i < entries.length; i++) {
    const x = expanded[i]
    if (x === null || x === undefined || !x.wildcard) continue
    for (const name of x.names) {
      const key = `${entries[i]!.action} ${name}`
      if (!wildcards.has(key)) wildcards.set(key, i)
    }
  }

  const out: PolicyWarning[] = []
  for (let i = 0; i < entries.length; i++) {
    const x = expanded[i]
    if (x === null || x === undefined) continue
    const e = entries[i]!
    for (const name of x.names) {
      const why = impossibleLabel(name)
      if (why === null) continue
      const more = x.names.length > 1 ? ` (in "${x.wildcard ? '*.' : ''}${name}")` : ''
      out.push({ entryIndex: i, kind: 'impossible', message: `"${e.entry}"${more}: ${why}` })
      break
    }
    const dup = new Tally()
    const shadow = new Tally()
    for (const name of x.names) {
      const shown = x.wildcard ? `*.${name}` : name
      const key = `${e.action} ${x.wildcard ? '*.' : ''}${name}`
      const j = first.get(key)
      if (j === undefined) first.set(key, i)
      else dup.add(shown, j)
      // *.S covers `name` (and *.name) when S is a proper suffix of name; nearest first.
      for (let dot = name.indexOf('.'); dot !== -1; dot = name.indexOf('.', dot + 1)) {
        const w = wildcards.get(`${e.action} ${name.slice(dot + 1)}`)
        if (w !== undefined && w !== i && (e.action === 'deny' || samePorts(entries[w]!.ports, e.ports))) {
          shadow.add(shown, w)
          break
        }
      }
    }
    if (dup.first !== null) {
      const other = entries[dup.other]!
      const what = dup.other === i ? `"${dup.first}" appears more than once in its expansion` : `"${dup.first}"${dup.more()} duplicates "${other.entry}" at ${other.source}`
      out.push({ entryIndex: i, kind: 'duplicate', message: what })
    }
    if (shadow.first !== null) {
      const other = entries[shadow.other]!
      const verb = e.action === 'allow' ? 'allowed' : 'denied'
      out.push({
        entryIndex: i,
        kind: 'shadowed',
        message: `"${shadow.first}"${shadow.more()} already ${shadow.count > 1 ? 'are' : 'is'} ${verb} by "${other.entry}" at ${other.source}`,
      })
    }
  }
  return out
}

/**
 * Why no real host name has a label of `name` (normalized: lowercase, punycode), or null.
 * A label that starts or ends with "-" is refused by every registry (RFC 952, RFC 1123,
 * and RFC 5891 for IDNs); an `xn--` label must be the punycode of a Unicode label,
 * which the round trip through node:url's IDNA conversion checks (`xn--abc` decodes to
 * nothing; `xn--zz-` decodes to plain `zz`, which is never written as xn--).
 */
export function impossibleLabel(name: string): string | null {
  // Cheap first: at 1 M entries almost no name has either.
  if (name.indexOf('-') === -1) return null
  let start = 0
  for (;;) {
    const dot = name.indexOf('.', start)
    const end = dot === -1 ? name.length : dot
    if (end > start) {
      const label = name.slice(start, end)
      if (label.charCodeAt(0) === 0x2d) return `label "${label}" starts with a hyphen: no host name can have one`
      if (label.charCodeAt(label.length - 1) === 0x2d) return `label "${label}" ends with a hyphen: no host name can have one`
      if (label.startsWith('xn--')) {
        // Node 20 decodes invalid punycode to '', Node 24 returns the label unchanged; a
        // valid label decodes to something with a non-ASCII character that encodes back.
        const unicode = domainToUnicode(label)
        if (!/[^\x00-\x7f]/.test(unicode) || domainToASCII(unicode) !== label) return `label "${label}" is not valid punycode: no internationalized name is written so`
      }
    }
    if (dot === -1) return null
    start = dot + 1
  }
}

/** The first offending name of an entry, the entry it collides with, and how many more. */
class Tally {
  first: string | null = null
  other = -1
  count = 0
  add(name: string, other: number): void {
    if (this.first === null) {
      this.first = name
      this.other = other
    }
    this.count++
  }
  more(): string {
    return this.count > 1 ? ` and ${this.count - 1} more name${this.count > 2 ? 's' : ''}` : ''
  }
}

function samePorts(a: readonly PortSpec[], b: readonly PortSpec[]): boolean {
  if (a.length !== b.length) return false
  const set = new Set(a.map(formatPort))
  return b.every((p) => set.has(formatPort(p)))
}
