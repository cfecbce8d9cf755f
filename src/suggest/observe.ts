/**
 * Reads egressd's own JSON log lines into per-group name observations. Pure: lines in,
 * tallies out. Lines that are not JSON, not a decision event (src/log/decision.ts), or
 * carry no usable name are counted and skipped: an operator feeds it whole journald exports.
 */
import { parseDecision, type DecisionEvent } from '../log/decision.js'
import { hostNameProblem } from '../policy/host-name.js'

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
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      return
    }
    const event = parseDecision(parsed)
    if (event === null) return
    const r = parsed as { time?: unknown }
    this.addEvent(event, typeof r.time === 'string' ? r.time : typeof r.time === 'number' ? new Date(r.time).toISOString() : '')
  }

  /**
   * One decision event (from a log line, or from the status page's ring), `time` as
   * ISO 8601 or ''. Counted in `used` only when it names a name a proposal can use.
   */
  addEvent(event: DecisionEvent, time: string): void {
    if (!VERDICTS.has(event.verdict)) return
    if (event.reason !== null && NOT_NAMES.has(event.reason)) return
    // cname_blocked: the queried name was allowed; what the operator may want to allow is the target.
    const raw = event.reason === 'cname_blocked' ? (event.cname ?? null) : event.name
    const name = raw === null ? null : hostName(raw)
    if (name === null) return
    // A block with a deciding rule was decided by a deny: an operator's decision already taken.
    if (event.reason === 'denied' || (event.verdict !== 'allowed' && event.rule !== null)) {
      this.denied++
      return
    }
    const group = /^[a-z0-9_-]{1,64}$/.test(event.group) ? event.group : 'default'
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
    if (event.protocol === 'dns') ob.dns++
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
  // The same rule `egressd check` explains (src/policy/host-name.ts).
  if (hostNameProblem(name) !== null) return null
  // A numeric last label is an address (or a mistyped one), never a registrable name.
  if (/^[0-9]+$/.test(name.slice(name.lastIndexOf('.') + 1))) return null
  return name
}
