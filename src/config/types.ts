import type { GroupConfig, GroupMode, PolicyEntry, PortSpec } from '../policy/types.js'
import type { Infer } from './fields.js'
import type { dnsSchema, firewallSchema, logSchema, metricsSchema, sniSchema } from './schema.js'

/** The sections of `Config`, inferred from their schema (schema.ts holds each key's doc). */
export type DnsConfig = Infer<typeof dnsSchema.fields>
export type SniConfig = Infer<typeof sniSchema.fields>
export type MetricsConfig = Infer<typeof metricsSchema.fields>
export type FirewallConfig = Infer<typeof firewallSchema.fields>
export type LogConfig = Infer<typeof logSchema.fields>

export interface Config {
  /** Path of the file this came from, as given. */
  readonly file: string
  readonly dns: DnsConfig
  readonly sni: SniConfig
  readonly metrics: MetricsConfig
  readonly firewall: FirewallConfig
  readonly log: LogConfig
  readonly presets: readonly string[]
  /** allow and deny entries in order: presets first, then `allow`, then `deny`. */
  readonly policy: readonly PolicyEntry[]
  /**
   * The implicit group `default` (top-level `mode`, `report`, `report_ports`); its
   * entries are `policy`. Optional so hand-built Configs (tests) stay valid: absent
   * means enforce, no report entries. loadConfig always sets them.
   */
  readonly mode?: GroupMode
  readonly report?: readonly PolicyEntry[]
  readonly reportPorts?: readonly PortSpec[]
  /** Named groups in file order; a client takes the first whose `clients` contain it. */
  readonly groups?: readonly GroupConfig[]
}

export type { GroupConfig, GroupMode } from '../policy/types.js'
