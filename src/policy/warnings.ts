/**
 * Configuration warnings: entries that change nothing. Pure; run at load and reload,
 * never per query.
 */
import { expandPattern } from './pattern.js'
import { formatPort, type PolicyEntry, type PortSpec } from './types.js'

export interface PolicyWarning {
  /** The entry that changes nothing (the later of two duplicates, the narrower of two rules). */
  entryIndex: number
  kind: 'duplicate' | 'shadowed'
  /** Names the other entry and its source. */
  message: string
}

/**
 * Duplicates (the same normalized name, wildcard or not, with the same action), and
 * names that a wildcard of the same action already covers: `api.example.com` or
 * `*.api.example.com` under `*.example.com`. A narrower allow rule with other ports is
 * not shadowed: it decides which ports the firewall sink opens. Entries that do not
 * parse are skipped; compilePolicy reports them.
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
