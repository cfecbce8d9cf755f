import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import type { DecisionTap } from '../log/decision.js'
import type { Logger } from '../log/logger.js'
import type { BlockedNames } from '../metrics/blocked-names.js'
import type { GroupDecisions } from '../metrics/group-decisions.js'
import type { AllowedAnswerSink } from './answer-sink.js'
import { QueryHandler, type DnsPolicy } from './handler.js'
import { DnsMetrics } from './metrics.js'
import { Resolver } from './resolver.js'
import { DnsServer } from './server.js'

export { Resolver, type ResolvedAddresses } from './resolver.js'
export type { DnsPolicy } from './handler.js'

export interface DnsDeps {
  log: Logger
  /** The service registers its metrics here (see metrics.ts). */
  registry: Registry
  /** `blocked.record('dns', name)` per blocked query. */
  blocked: BlockedNames
  /**
   * Optional firewall sink (answer-sink.ts): called for every allowed answer with its
   * A/AAAA addresses (after CNAMEs) and the deciding rule; the answer is sent only after
   * the returned promise settles (a rejection is logged and counted, the answer still
   * goes out). Also called once per cache entry on a hit in the second half of its lifetime.
   */
  onAllowedAnswer?: AllowedAnswerSink
  /** `egressd_group_decisions_total`, shared with the SNI proxy; the daemon configures its groups. */
  decisions?: GroupDecisions
  /** Sees every decision line the service writes (the status page's ring). */
  tap?: DecisionTap
  /** Clock for cache ages and TTLs (ms); tests inject one. */
  now?: () => number
}

/**
 * The DNS service: server (sockets) + handler (decisions) + resolver core (cache and
 * upstreams), wired from its slice of the configuration (`DnsPolicy`: `dns:` settings,
 * the decision, the rebinding exemptions). `update` swaps everything but the listeners.
 */
export class DnsService {
  readonly resolver: Resolver
  readonly metrics: DnsMetrics
  private readonly handler: QueryHandler
  private readonly server: DnsServer

  constructor(policy: DnsPolicy, deps: DnsDeps) {
    const settings = policy.settings
    let server: DnsServer | null = null
    let resolver: Resolver | null = null
    this.metrics = new DnsMetrics(deps.registry, {
      cacheEntries: () => resolver?.cache.size ?? 0,
      cacheBytes: () => resolver?.cache.bytes ?? 0,
      pendingUpstream: () => resolver?.pending ?? 0,
      tcpConnections: () => server?.tcpConnections ?? 0,
    })
    resolver = this.resolver = new Resolver(settings, this.metrics, deps.now, deps.log)
    this.handler = new QueryHandler(policy, this.resolver, this.metrics, deps.log, deps.blocked, deps.onAllowedAnswer, deps.decisions ?? null, deps.tap ?? null)
    server = this.server = new DnsServer(settings.listen, this.handler, this.metrics, deps.log, settings)
  }

  get boundAddresses(): { udp: AddressInfo[]; tcp: AddressInfo[] } {
    return this.server.boundAddresses
  }

  /** Binds UDP and TCP on every `dns.listen` address; rejects (and closes what it bound) if any fails. */
  start(): Promise<void> {
    return this.server.start()
  }

  /** Reload: policy (or groups), ACL, rate limits, upstreams, cache limits; queries in flight finish as they began. */
  update(policy: DnsPolicy): void {
    this.resolver.configure(policy.settings)
    this.handler.update(policy)
    this.server.limits = policy.settings
  }

  /** Log lines held back by the per-event limiters since the last call. */
  takeSuppressedLogLines(): number {
    return this.handler.takeSuppressed()
  }

  /**
   * Stops accepting; queries in flight get their answer within DRAIN_MS (2 s) or a
   * SERVFAIL then (server.ts); then upstream tries still running are ended, so no timer
   * or socket of ours keeps the process alive after "stopped".
   */
  async stop(): Promise<void> {
    await this.server.stop()
    this.resolver.close()
  }
}
