import type { GroupConfig, GroupMode, PolicyEntry, PortSpec } from '../policy/types.js'
import type { Infer } from './fields.js'
import type { dnsSchema, firewallSchema, logSchema, metricsSchema, sniSchema } from './schema.js'

/** The sections of `Config`, inferred from their schema (schema.ts holds each key's doc). */
export type DnsConfig = Infer<typeof dnsSchema.fields>
export type SniConfig = Infer<typeof sniSchema.fields>
export type MetricsConfig = Infer<typeof metricsSchema.fields>
export type FirewallConfig = Infer<typeof firewallSchema.fields>
export type LogConfig = Infer<typeof logSchema.fields>

/** The status page on the metrics listener (src/ui); see src/ui/README.md for access rules. */
export interface UiConfig {
  readonly enabled: boolean
  /** Path of the bearer token file, as written; null when none is configured. */
  readonly tokenFile: string | null
  /** sha256 of the token (file content, surrounding whitespace removed); never the token itself. */
  readonly tokenSha256: string | null
  /** Decision events kept in memory for the page and /api/events. */
  readonly eventsMax: number
  /** Live event streams open at once; one more is answered 503. */
  readonly clientsMax: number
}

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
  /** The files the top-level `include:` read, nested ones included, in the order read. */
  readonly includes?: readonly string[]
  /**
   * sha256 prefix (12 hex digits) of the file, or of the file and every included file and
   * operator preset read with it (load.ts): `egressd_config_info{hash}`. Absent for a
   * Config built in memory.
   */
  readonly hash?: string
  /** Optional so hand-built Configs (tests) stay valid: absent means the defaults of src/ui. */
  readonly ui?: UiConfig
}

export type { GroupConfig, GroupMode } from '../policy/types.js'
