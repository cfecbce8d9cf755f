/**
 * Reads egressd's own JSON log lines into per-group name observations. Pure: lines in,
 * tallies out. Lines that are not JSON, not a DNS or SNI decision, or carry no usable
 * name are counted and skipped: an operator feeds it whole journald exports.
 */

export interface Observation {
  count: number
  dns: number
  sni: number
  /** ISO 8601 times as logged; compared as strings (same format, same zone). */
  first: string
  last: string
}

const VERDICTS = new Set(['blocked', 'would_block', 'allowed'])
/** Reasons under which the `name` field is not a host name (IP literals, escaped bad bytes). */
const NOT_NAMES = new Set(['ip_literal', 'bad_name'])
/** Beyond this many distinct names over all groups, further new names are counted, not kept. */
export const MAX_NAMES = 200_000
const MAX_LINE = 65_536

export class Observations {
  /** group → name → tally. */
  readonly groups = new Map<string, Map<string, Observation>>()
  lines = 0
  used = 0
  /** Decisions about names beyond MAX_NAMES. */
  dropped = 0
  /** Blocks by an explicit deny rule: an operator's decision, never proposed for allow. */
  denied = 0
  private names = 0

  add(line: string): void {
    this.lines++
    if (line.length === 0 || line.length > MAX_LINE || line.charCodeAt(0) !== 0x7b /* { */) return
    let o: unknown
    try {
      o = JSON.parse(line)
    } catch {
      return
    }
    if (typeof o !== 'object' || o === null) return
    const r = o as Record<string, unknown>
    const protocol = r.protocol
    if (protocol !== 'dns' && protocol !== 'sni') return
    if (typeof r.verdict !== 'string' || !VERDICTS.has(r.verdict)) return
    if (typeof r.reason === 'string' && NOT_NAMES.has(r.reason)) return
    const name = typeof r.name === 'string' ? hostName(r.name) : null
    if (name === null) return
    // DNS says reason "denied"; SNI names the deciding rule, which on a block is a deny.
    if (r.reason === 'denied' || (protocol === 'sni' && r.verdict !== 'allowed' && typeof r.rule === 'string')) {
      this.denied++
      return
    }
    const group = typeof r.group === 'string' && /^[a-z0-9_-]{1,64}$/.test(r.group) ? r.group : 'default'
    const time = typeof r.time === 'string' ? r.time : typeof r.time === 'number' ? new Date(r.time).toISOString() : ''
    let names = this.groups.get(group)
    if (names === undefined) this.groups.set(group, (names = new Map()))
    let ob = names.get(name)
    if (ob === undefined) {
      if (this.names >= MAX_NAMES) {
        this.dropped++
        return
      }
      this.names++
      ob = { count: 0, dns: 0, sni: 0, first: time, last: time }
      names.set(name, ob)
    }
    this.used++
    ob.count++
    if (protocol === 'dns') ob.dns++
    else ob.sni++
    if (time !== '' && (ob.first === '' || time < ob.first)) ob.first = time
    if (time > ob.last) ob.last = time
  }
}

/**
 * A name as the policy would accept it in an allow entry (lowercase, no trailing dot,
 * labels of a-z 0-9 - _), or null: IP literals, the root, escaped bytes.
 */
export function hostName(raw: string): string | null {
  let name = raw.toLowerCase()
  if (name.endsWith('.')) name = name.slice(0, -1)
  if (name.length === 0 || name.length > 253) return null
  const labels = name.split('.')
  for (const l of labels) if (!/^[a-z0-9_-]{1,63}$/.test(l)) return null
  // A numeric last label is an address (or a mistyped one), never a registrable name.
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return null
  return name
}
