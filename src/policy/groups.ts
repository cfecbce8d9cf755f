/**
 * Per-client groups, compiled: one Policy per group (identical entry lists compiled
 * once), the group's report rules, and a selector from a client address to its group.
 * Pure: no sockets, logging or metrics; the DNS handler and the SNI proxy count and log.
 */
import type { Cidr } from '../net/cidr.js'
import { CidrTable } from '../net/cidr-table.js'
import { compilePolicy } from './compile.js'
import { entriesKey } from './packed-entries.js'
import type { Policy } from './match.js'
import type { GroupConfig, GroupMode, PolicyEntry, PortSpec, Rule } from './types.js'

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
    const verdict = this.report === null ? 0 : this.report.verdictWire(buf, offset)
    return verdict > 0 ? this.report!.ruleOf(verdict) : this.reportAll
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

  /** Every group's CIDRs in group order; a lookup gives the index into `clientCidrs`. */
  private readonly clients: CidrTable
  /** Per CIDR of `clients`: the CIDR and the index of its group. */
  private readonly clientCidrs: readonly Cidr[]
  private readonly clientGroup: Int32Array

  /**
   * `configs`: the named groups then the default one (`allGroups(config)`). Entry lists
   * whose content (entries, ports and where they were written) is identical compile to
   * one Policy: several groups naming the same presets share one trie. `previous` (the
   * running set, on reload) lends its policies when a list did not change; `compiled`
   * (a reload's worker, src/daemon/reload.ts) holds policies compiled off the event loop,
   * by the same content key (entriesKey).
   */
  static compile(configs: readonly GroupConfig[], previous?: GroupSet | null, compiled?: ReadonlyMap<string, Policy>): GroupSet {
    const byKey = new Map<string, Policy>()
    const get = (entries: readonly PolicyEntry[]): Policy => {
      const key = entriesKey(entries)
      let p = byKey.get(key) ?? previous?.byKey.get(key) ?? compiled?.get(key)
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
    // In group order: the first CIDR that matches belongs to the first group that does.
    const entries = groups.flatMap((g) => g.clients.map((cidr) => ({ cidr, group: g.index })))
    this.clientCidrs = entries.map((e) => e.cidr)
    this.clientGroup = Int32Array.from(entries, (e) => e.group)
    this.clients = new CidrTable(entries.map((e, i) => ({ cidr: e.cidr, value: i })))
  }

  /** The group of a client address as the socket reports it; `default` for anything unparsable. */
  select(address: string): CompiledGroup {
    if (!this.named) return this.default
    const i = this.clients.lookup(address)
    return i < 0 ? this.default : this.groups[this.clientGroup[i]!]!
  }

  /** `select` with its reason, for explanations: the CIDR that chose the group, or null for `default`. */
  explain(address: string): { group: CompiledGroup; cidr: Cidr | null } {
    const i = this.named ? this.clients.lookup(address) : -1
    return i < 0 ? { group: this.default, cidr: null } : { group: this.groups[this.clientGroup[i]!]!, cidr: this.clientCidrs[i]! }
  }

  /** Rules across the distinct compiled policies: groups sharing a list count it once. */
  get ruleCount(): number {
    let n = 0
    for (const p of new Set(this.groups.map((g) => g.policy))) n += p.size
    return n
  }

  /** Content keys of the compiled policies: a reload's worker need not compile these again. */
  get keys(): string[] {
    return [...this.byKey.keys()]
  }

  byName(name: string): CompiledGroup | undefined {
    return this.groups.find((g) => g.name === name)
  }
}

