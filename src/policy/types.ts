/** Types shared by the policy compiler, the matcher, the decision and their callers. No I/O here. */
import type { Cidr } from '../net/cidr.js'

export type Proto = 'tcp' | 'udp'

export interface PortSpec {
  readonly port: number
  readonly proto: Proto
}

export type Action = 'allow' | 'deny'

/** One configuration entry before expansion, as the compiler receives it. */
export interface PolicyEntry {
  readonly action: Action
  /** The pattern as written: `{0..3}.resinio.pool.ntp.org`, `*.Example.COM.`, `bücher.de`. */
  readonly entry: string
  /** Ports for the firewall sink; `[443/tcp]` when the entry named none. */
  readonly ports: readonly PortSpec[]
  /** Where it was written, for explanations: `egressd.yaml:12:5`, `allow.d/site.yaml:3:5` or `preset dt-cloud-connector (/…/dt-cloud-connector.yaml:7:5)`. */
  readonly source: string
}

/**
 * One expanded, normalized rule: what a lookup returns. Rules are allocated once at
 * compile time; a lookup hands back a reference, never a new object.
 */
export interface Rule {
  /** Index in `Policy.rules`. */
  readonly id: number
  readonly action: Action
  /** Normalized pattern that matched: lowercase, punycode, no trailing dot; `*.example.com` for wildcards. */
  readonly pattern: string
  readonly wildcard: boolean
  /** The entry as written, before brace expansion. */
  readonly entry: string
  readonly ports: readonly PortSpec[]
  readonly source: string
}

export const DEFAULT_PORTS: readonly PortSpec[] = Object.freeze([Object.freeze({ port: 443, proto: 'tcp' as const })])

export function formatPort(p: PortSpec): string {
  return `${p.port}/${p.proto}`
}

export type GroupMode = 'enforce' | 'report'

/**
 * One client group as the policy compiles it: a `groups:` item, or the implicit
 * `default` made of the top-level presets/allow/deny (src/config/groups.ts builds both).
 */
export interface GroupConfig {
  readonly name: string
  /** Empty for `default`, which takes every client no named group took. */
  readonly clients: readonly Cidr[]
  readonly presets: readonly string[]
  /** presets, then allow, then deny: the same order as `Config.policy`. */
  readonly policy: readonly PolicyEntry[]
  readonly mode: GroupMode
  /** Per-name report entries (action allow): a would-be block of a matching name passes as would_block. */
  readonly report: readonly PolicyEntry[]
  /** Ports the firewall sink opens for a name let through by `mode: report` without a report entry. */
  readonly reportPorts: readonly PortSpec[]
  /** `file:line:col` of the group's item; `file` for the default group. */
  readonly source: string
}
