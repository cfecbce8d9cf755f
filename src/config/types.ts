import type { GroupConfig, GroupMode, PolicyEntry, PortSpec } from '../policy/types.js'

/** `host:port`, IPv6 written `[::1]:5353`; `host` holds the bare address. */
export interface HostPort {
  readonly host: string
  readonly port: number
  readonly family: 4 | 6
}

/** A parsed CIDR; `bits` is the prefix length, `bytes` the network address (4 or 16 bytes). */
export interface Cidr {
  readonly text: string
  readonly family: 4 | 6
  readonly bytes: Uint8Array
  readonly bits: number
}

export interface DnsConfig {
  readonly listen: readonly HostPort[]
  /** Resolved upstreams; from /etc/resolv.conf when the file gave `[]`. */
  readonly upstreams: readonly HostPort[]
  readonly blockResponse: 'nxdomain' | 'refused'
  readonly rebindProtection: boolean
  /** Patterns (same syntax as allow) whose answers may hold private addresses. */
  readonly rebindExempt: readonly PolicyEntry[]
  readonly clients: readonly Cidr[]
  /** Per try, per upstream. */
  readonly upstreamTimeoutMs: number
  readonly maxPendingUpstream: number
  readonly maxTcpConnections: number
  /** A client TCP connection with no complete query for this long is closed. */
  readonly tcpIdleTimeoutMs: number
  readonly cache: {
    readonly maxEntries: number
    readonly maxBytes: number
    readonly minTtl: number
    readonly maxTtl: number
    /** Cap for negative answers (RFC 2308: SOA minimum, bounded). */
    readonly negativeMaxTtl: number
  }
  /** Token bucket per client address; `qps: 0` disables it. */
  readonly rateLimit: { readonly qps: number; readonly burst: number }
}

export interface SniConfig {
  readonly listen: readonly HostPort[]
  readonly upstreamPort: number
  readonly onBlock: 'reset' | 'alert'
  readonly allowPrivateDestinations: boolean
  readonly maxClientHelloBytes: number
  readonly handshakeTimeoutMs: number
  readonly connectTimeoutMs: number
  /** 0 = off: devices hold long-lived gRPC and MQTT streams. */
  readonly idleTimeoutMs: number
  readonly maxConnections: number
  /** On SIGTERM, how long spliced connections may finish before they are cut. */
  readonly shutdownGraceMs: number
}

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
  readonly metrics: {
    readonly listen: HostPort | null
    /** How many distinct names `egressd_blocked_total{name}` keeps before folding into `_other`. */
    readonly blockedNamesMax: number
  }
  readonly firewall: {
    readonly nftables: {
      readonly enabled: boolean
      readonly table: string
      readonly graceSeconds: number
    }
  }
  readonly log: { readonly level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent' }
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
  /** Optional so hand-built Configs (tests) stay valid: absent means the defaults of src/ui. */
  readonly ui?: UiConfig
}

export type { GroupConfig, GroupMode } from '../policy/types.js'
