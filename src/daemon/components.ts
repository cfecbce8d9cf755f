/**
 * The daemon's parts, each built from its own slice of a compiled configuration and
 * driven through one interface. The Daemon starts, reloads and stops whatever this
 * list holds: adding a part is one entry here, and its reload cannot be forgotten.
 */
import { Registry } from 'prom-client'
import type { Config } from '../config/types.js'
import { DnsService } from '../dns/service.js'
import { NftablesSink, type NftRunner } from '../firewall/nftables-sink.js'
import type { Logger } from '../log/logger.js'
import { BlockedNames } from '../metrics/blocked-names.js'
import { daemonMetrics } from '../metrics/daemon-metrics.js'
import { GroupDecisions } from '../metrics/group-decisions.js'
import { MetricsServer } from '../metrics/server.js'
import { SniProxy } from '../sni/proxy.js'
import { StatusPage, type StatusSources } from '../ui/status-page.js'
import { version } from '../version.js'
import type { CompiledConfig } from './compiled-config.js'

export interface Component {
  readonly name: string
  /** Tier 0 starts first and stops last; components of one tier start and stop together. */
  readonly tier: number
  start(): Promise<void>
  /** Takes a new configuration; synchronous, so a query sees every part old or every part new. */
  apply(next: CompiledConfig): void
  stop(): Promise<void>
  /** Readiness (all listeners bound) and its end (stopping), for those who report it. */
  ready?(ready: boolean): void
}

/** What only a restart applies: sockets already bound, and whether the nftables sink exists. */
export function restartKey(config: Config): string {
  const nft = config.firewall.nftables
  return JSON.stringify([config.dns.listen, config.sni.listen, config.metrics.listen, nft.enabled, nft.table, nft.scope, nft.deviceKey])
}

export interface SharedParts {
  readonly log: Logger
  readonly registry: Registry
  /** For tests: nft in a network namespace, or a recording fake. */
  readonly nftRunner?: NftRunner
}

/** Every part of a daemon for `compiled`, in start order; `dns`, `sni` and `http` are kept for callers that ask where they listen. */
export function buildComponents(compiled: CompiledConfig, shared: SharedParts) {
  const { log, registry } = shared
  const config = compiled.config
  const counters = observability(compiled, shared)
  // The sink is created only when enabled: it needs CAP_NET_ADMIN and the nft tool.
  // Its add() never rejects; nft failures are counted and DNS goes on.
  const firewall = config.firewall.nftables.enabled ? new NftablesSink(config.firewall.nftables, { log, registry, runner: shared.nftRunner }) : null
  // The status page lives on the metrics listener; `sources` is read only when a page asks.
  const ui = config.metrics.listen ? new StatusPage(compiled, { log, registry, sources: { listeners: (): ReturnType<StatusSources['listeners']> => listeners(), firewall: () => firewallState() } }) : null
  const dns = new DnsService(compiled.dns, {
    log,
    registry,
    blocked: counters.blocked,
    decisions: counters.decisions,
    // Scope shared: keyed by destination, an answer opens its rule's ports for every
    // device; scope device: keyed by the client too (docs/groups.md, "Firewall sink").
    onAllowedAnswer: firewall?.answerSink(),
    tap: ui?.tap,
  })
  const sni = new SniProxy(compiled.sni, { log, registry, blocked: counters.blocked, resolver: dns.resolver, decisions: counters.decisions, tap: ui?.tap })
  const http = config.metrics.listen ? new MetricsServer(registry, config.metrics.listen, ui?.routes()) : null
  const hp = (a: { address: string; port: number; family: string }): string => (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`)
  const listeners = (): ReturnType<StatusSources['listeners']> => ({
    dns: [...new Set([...dns.boundAddresses.udp, ...dns.boundAddresses.tcp].map(hp))],
    sni: sni.boundAddresses.map(hp),
    metrics: http?.address ? hp(http.address) : null,
  })
  const firewallState = (): ReturnType<StatusSources['firewall']> => (firewall === null ? null : { table: config.firewall.nftables.table, elements: firewall.knownSize })
  let graceMs = config.sni.shutdownGraceMs

  const components: Component[] = [counters.component]
  if (firewall !== null) {
    // Sets exist before the first answer can be added to them.
    components.push({ name: 'firewall', tier: 0, start: () => firewall.start(), apply: (c) => firewall.update(c.config.firewall.nftables), stop: () => firewall.stop() })
  }
  if (http !== null) {
    components.push({ name: 'metrics', tier: 0, start: () => http.start(), apply: () => {}, stop: () => http.stop(), ready: (r) => (http.ready = r) })
  }
  if (ui !== null) components.push({ name: 'ui', tier: 0, start: () => ui.start(), apply: (c) => ui.apply(c), stop: () => ui.stop() })
  components.push(
    { name: 'dns', tier: 1, start: () => dns.start(), apply: (c) => dns.update(c.dns), stop: () => dns.stop() },
    {
      name: 'sni',
      tier: 1,
      start: () => sni.start(),
      apply: (c) => {
        sni.update(c.sni)
        graceMs = c.config.sni.shutdownGraceMs
      },
      stop: () => sni.stop(graceMs),
    },
  )
  return {
    components,
    dns,
    sni,
    http,
    firewall,
    ui,
    /** Per-event log lines held back by the limiters since the last call, per protocol. */
    takeSuppressed: () => ({ dns: dns.takeSuppressedLogLines(), sni: sni.logLimiter.takeSuppressed() }),
    metrics: counters.metrics,
  }
}

/** The daemon-wide counters: policy size, reloads, blocked names, per-group decisions, log level. */
function observability(first: CompiledConfig, { log, registry }: SharedParts) {
  const metrics = daemonMetrics(registry)
  const blocked = new BlockedNames(registry, first.config.metrics.blockedNamesMax, first.config.metrics.blockedClientsMax)
  const decisions = new GroupDecisions(registry)
  const apply = (c: CompiledConfig): void => {
    decisions.configure(c.groups.groups.map((g) => g.name))
    blocked.resize(c.config.metrics.blockedNamesMax, c.config.metrics.blockedClientsMax)
    log.level = c.config.log.level
    metrics.policyRules.set(c.groups.ruleCount)
    metrics.lastReload.set(Date.now() / 1000)
    metrics.lastReloadSuccessful.set(1)
    metrics.info.reset()
    metrics.info.set({ hash: c.hash, version: version() }, 1)
  }
  apply(first)
  const component: Component = { name: 'counters', tier: 0, start: async () => {}, apply, stop: async () => {} }
  return { component, blocked, decisions, metrics }
}
