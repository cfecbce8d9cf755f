/**
 * Per-client groups, compiled: one Policy per group (identical entry lists compiled
 * once), the group's report rules, and a selector from a client address to its group.
 * Pure: no sockets, logging or metrics; the DNS handler and the SNI proxy count and log.
 */
import type { Cidr, GroupConfig, GroupMode } from '../config/types.js'
import { parseIpInto } from '../dns/private-address.js'
import { compilePolicy } from './compile.js'
import type { Policy } from './match.js'
import type { PolicyEntry, PortSpec, Rule } from './types.js'

export class CompiledGroup {
  /** Set when a would-be block may pass: `mode: report`, or any report entries. */
  readonly reports: boolean

  constructor(
    /** Position in `GroupSet.groups`: the slot of per-group counters. */
    readonly index: number,
    readonly name: string,
    readonly mode: GroupMode,
    readonly clients: readonly Cidr[],
    readonly policy: Policy,
    /** The report entries compiled (all `allow`), or null when there are none. */
    readonly report: Policy | null,
    /** `mode: report`: the rule a would-be block passes under when no report entry names it. */
    readonly reportAll: Rule | null,
    readonly config: GroupConfig,
  ) {
    this.reports = report !== null || reportAll !== null
  }

  /**
   * The rule that lets a would-be-blocked name through, or null to block it: a report
   * entry naming it (its ports), else `mode: report`'s catch-all (`report_ports`).
   */
  reportRule(name: string): Rule | null {
    const r = this.report?.match(name) ?? null
    return r !== null && r.action === 'allow' ? r : this.reportAll
  }

  reportRuleWire(buf: Uint8Array, offset: number): Rule | null {
    const r = this.report === null ? null : this.report.matchWire(buf, offset)
    return r !== null && r.action === 'allow' ? r : this.reportAll
  }
}

/** `mode: report`'s catch-all: shaped like a compiled rule, so logs and the sink treat it alike. */
function reportAllRule(g: GroupConfig): Rule {
  return Object.freeze({
    id: -1,
    action: 'allow' as const,
    pattern: '*',
    wildcard: true,
    entry: `mode: report (group ${g.name})`,
    ports: g.reportPorts as readonly PortSpec[],
    source: g.source,
  })
}

/**
 * Every group of a configuration, named ones in order and `default` last. A client is
 * in the first group whose CIDRs contain it; `select` is allocation-free and skipped
 * entirely (`named === false`) when no groups are configured.
 */
export class GroupSet {
  readonly groups: readonly CompiledGroup[]
  readonly default: CompiledGroup
  readonly named: boolean
  /** Distinct compiled policies (the sharing `compile` achieved; tests and logs read it). */
  readonly compiled: number
  /** For reuse by the next reload: policies by entry-list content. */
  private readonly byKey: Map<string, Policy>

  private readonly v4net: Uint32Array
  private readonly v4mask: Uint32Array
  private readonly v4group: Uint16Array
  private readonly v6: readonly { bytes: Uint8Array; bits: number; group: number }[]
  private readonly scratch = new Uint8Array(16)
  /** The last address selected: a gateway serves few clients, and a flood comes from few sources. */
  private lastAddress = ''
  private lastGroup: CompiledGroup

  /**
   * `configs`: the named groups then the default one (`allGroups(config)`). Entry lists
   * whose content (entries, ports and where they were written) is identical compile to
   * one Policy: several groups naming the same presets share one trie. `previous` (the
   * running set, on reload) lends its policies when a list did not change.
   */
  static compile(configs: readonly GroupConfig[], previous?: GroupSet | null): GroupSet {
    const byKey = new Map<string, Policy>()
    const get = (entries: readonly PolicyEntry[]): Policy => {
      const key = JSON.stringify(entries)
      let p = byKey.get(key) ?? previous?.byKey.get(key)
      if (p === undefined) p = compilePolicy(entries)
      byKey.set(key, p)
      return p
    }
    const groups = configs.map(
      (g, i) =>
        new CompiledGroup(
          i,
          g.name,
          g.mode,
          g.clients,
          get(g.policy),
          g.report.length > 0 ? get(g.report) : null,
          g.mode === 'report' ? reportAllRule(g) : null,
          g,
        ),
    )
    return new GroupSet(groups, byKey)
  }

  /** One group `default` around a policy compiled elsewhere (enforce, no report entries). */
  static single(policy: Policy, config?: GroupConfig): GroupSet {
    const g: GroupConfig = config ?? {
      name: 'default', clients: [], presets: [], policy: [], mode: 'enforce', report: [], reportPorts: [], source: '',
    }
    return new GroupSet([new CompiledGroup(0, g.name, g.mode, [], policy, null, g.mode === 'report' ? reportAllRule(g) : null, g)], new Map())
  }

  private constructor(groups: CompiledGroup[], byKey: Map<string, Policy>) {
    this.groups = groups
    this.default = groups[groups.length - 1]!
    this.named = groups.length > 1
    this.byKey = byKey
    this.compiled = new Set(groups.flatMap((g) => (g.report ? [g.policy, g.report] : [g.policy]))).size
    this.lastGroup = this.default
    const v4: { net: number; mask: number; group: number }[] = []
    const v6: { bytes: Uint8Array; bits: number; group: number }[] = []
    for (const g of groups) {
      for (const c of g.clients) {
        if (c.family === 6) {
          v6.push({ bytes: c.bytes, bits: c.bits, group: g.index })
          continue
        }
        const mask = c.bits === 0 ? 0 : (0xffffffff << (32 - c.bits)) >>> 0
        const b = c.bytes
        v4.push({ net: (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) & mask) >>> 0, mask, group: g.index })
      }
    }
    // Kept in group order: the first CIDR that matches belongs to the first group that does.
    this.v4net = Uint32Array.from(v4, (x) => x.net)
    this.v4mask = Uint32Array.from(v4, (x) => x.mask)
    this.v4group = Uint16Array.from(v4, (x) => x.group)
    this.v6 = v6
  }

  /** The top-level policy's verdict; lets a GroupSet stand where a single policy was expected. */
  match(name: string): Rule | null {
    return this.default.policy.match(name)
  }

  get size(): number {
    return this.default.policy.size
  }

  /** The group of a client address as the socket reports it; `default` for anything unparsable. */
  select(address: string): CompiledGroup {
    if (!this.named) return this.default
    if (address === this.lastAddress) return this.lastGroup
    const g = this.groups[this.indexOf(address)]!
    this.lastAddress = address
    this.lastGroup = g
    return g
  }

  byName(name: string): CompiledGroup | undefined {
    return this.groups.find((g) => g.name === name)
  }

  private indexOf(address: string): number {
    const s = this.scratch
    const n = parseIpInto(address, s)
    if (n === 0) return this.default.index
    if (n === 4) return this.v4Index(((s[0]! << 24) | (s[1]! << 16) | (s[2]! << 8) | s[3]!) >>> 0)
    let mapped = s[10] === 0xff && s[11] === 0xff
    for (let i = 0; i < 10 && mapped; i++) if (s[i] !== 0) mapped = false
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: judged as IPv4, like the ACL.
    if (mapped) return this.v4Index(((s[12]! << 24) | (s[13]! << 16) | (s[14]! << 8) | s[15]!) >>> 0)
    for (const c of this.v6) if (prefixMatch(s, c.bytes, c.bits)) return c.group
    return this.default.index
  }

  private v4Index(v: number): number {
    const net = this.v4net
    const mask = this.v4mask
    for (let i = 0; i < net.length; i++) if (((v & mask[i]!) >>> 0) === net[i]) return this.v4group[i]!
    return this.default.index
  }
}

function prefixMatch(a: Uint8Array, net: Uint8Array, bits: number): boolean {
  let i = 0
  for (; bits >= 8; bits -= 8, i++) if (a[i] !== net[i]) return false
  if (bits === 0) return true
  const mask = (0xff << (8 - bits)) & 0xff
  return (a[i]! & mask) === (net[i]! & mask)
}
