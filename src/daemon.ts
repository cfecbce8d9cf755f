import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { ConfigErrors } from './errors.js'
import { allGroups } from './config/groups.js'
import { loadConfig } from './config/load.js'
import { formatHostPort } from './config/net.js'
import type { Config } from './config/types.js'
import { DnsService } from './dns/service.js'
import { NftablesSink } from './firewall/nftables-sink.js'
import { createLogger } from './log/logger.js'
import { notifySystemd } from './log/sd-notify.js'
import { BlockedNames } from './metrics/blocked-names.js'
import { daemonMetrics } from './metrics/daemon-metrics.js'
import { GroupDecisions } from './metrics/group-decisions.js'
import { MetricsServer } from './metrics/server.js'
import { GroupSet } from './policy/groups.js'
import { SniProxy } from './sni/proxy.js'

/** Per-event lines (blocked queries and connections) beyond the limiters are summed up this often. */
const SUPPRESSED_REPORT_MS = 10_000

function version(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
}

function configHash(config: Config): string {
  return createHash('sha256').update(readFileSync(config.file)).digest('hex').slice(0, 12)
}

/** What a reload cannot apply: sockets already bound, and whether the nftables sink exists. */
function restartKey(config: Config): string {
  const nft = config.firewall.nftables
  return JSON.stringify([config.dns.listen, config.sni.listen, config.metrics.listen, nft.enabled, nft.table])
}

/** Rules across the distinct compiled policies: groups sharing a list count it once. */
function ruleCount(set: GroupSet): number {
  const seen = new Set(set.groups.map((g) => g.policy))
  let n = 0
  for (const p of seen) n += p.size
  return n
}

function groupSummary(set: GroupSet): string[] {
  return set.groups.map((g) => (g.mode === 'report' ? `${g.name} (report)` : g.name))
}

/** `egressd run`: resolves with the exit code once the daemon has stopped. */
export async function runDaemon(file: string): Promise<number> {
  let config: Config
  let policy: GroupSet
  try {
    config = loadConfig(file).config
    policy = GroupSet.compile(allGroups(config))
  } catch (e) {
    if (!(e instanceof ConfigErrors)) throw e
    for (const err of e.errors) process.stderr.write(err.message + '\n')
    return 2
  }

  const log = createLogger(config.log.level)
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  // prom-client exports these gauges with a _total suffix that promtool's lint rejects;
  // nodejs_active_handles/requests/resources carry the same numbers without it.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name)
  const metrics = daemonMetrics(registry)
  const blocked = new BlockedNames(registry, config.metrics.blockedNamesMax)
  const decisions = new GroupDecisions(registry)
  decisions.configure(policy.groups.map((g) => g.name))
  // The sink is created only when enabled: it needs CAP_NET_ADMIN and the nft tool.
  // Its add() never rejects; nft failures are counted and DNS goes on.
  const firewall = config.firewall.nftables.enabled ? new NftablesSink(config.firewall.nftables, { log, registry }) : null
  const dns = new DnsService(config, policy, {
    log,
    registry,
    blocked,
    decisions,
    // Shared sets, keyed by destination only: an answer one group received opens its
    // rule's ports for every device (docs/groups.md says why that is acceptable).
    onAllowedAnswer: firewall ? (name, rule, addresses) => firewall.add(name, rule, addresses) : undefined,
  })
  const sni = new SniProxy(config, policy, { log, registry, blocked, resolver: dns.resolver, decisions })
  const http = config.metrics.listen ? new MetricsServer(registry, config.metrics.listen) : null

  const noteLoaded = (c: Config, p: GroupSet): void => {
    metrics.policyRules.set(ruleCount(p))
    metrics.lastReload.set(Date.now() / 1000)
    metrics.lastReloadSuccessful.set(1)
    metrics.info.reset()
    metrics.info.set({ hash: configHash(c), version: version() }, 1)
  }
  noteLoaded(config, policy)

  try {
    // Sets exist before the first answer can be added to them.
    await firewall?.start()
    await Promise.all([dns.start(), sni.start(), http?.start()])
  } catch (e) {
    log.fatal({ err: e }, 'cannot bind listeners')
    await Promise.allSettled([dns.stop(), sni.stop(0), http?.stop()])
    return 1
  }
  if (http) http.ready = true
  log.info({
    dns: config.dns.listen.map(formatHostPort),
    sni: config.sni.listen.map(formatHostPort),
    metrics: config.metrics.listen ? formatHostPort(config.metrics.listen) : null,
    upstreams: config.dns.upstreams.map(formatHostPort),
    rules: ruleCount(policy),
    groups: groupSummary(policy),
    version: version(),
  }, 'ready')
  await notifySystemd('READY=1')

  return new Promise<number>((resolve) => {
    let reloading: Promise<void> | null = null
    let reloadAgain = false

    const reload = async (): Promise<void> => {
      try {
        const next = loadConfig(file).config
        // Lists that did not change keep their compiled policy (content-keyed in GroupSet).
        const nextPolicy = GroupSet.compile(allGroups(next), policy)
        if (restartKey(next) !== restartKey(config)) {
          log.warn('listen addresses or firewall.nftables enabled/table changed: they take effect only after a restart; everything else is applied now')
        }
        // Compiled off to the side above; the swap below is synchronous, so a query
        // sees either the old policy or the new one, never a mix.
        dns.update(next, nextPolicy)
        sni.update(next, nextPolicy)
        decisions.configure(nextPolicy.groups.map((g) => g.name))
        firewall?.update(next.firewall.nftables)
        blocked.resize(next.metrics.blockedNamesMax)
        log.level = next.log.level
        config = next
        policy = nextPolicy
        noteLoaded(config, policy)
        metrics.reloads.inc({ result: 'success' })
        log.info({ rules: ruleCount(policy), groups: groupSummary(policy) }, 'configuration reloaded')
      } catch (e) {
        metrics.reloads.inc({ result: 'failure' })
        metrics.lastReloadSuccessful.set(0)
        const errors = e instanceof ConfigErrors ? e.errors.map((x) => x.message) : [(e as Error).message]
        for (const error of errors) log.error({ error }, 'reload failed; the running configuration stays')
      }
    }

    const onHup = (): void => {
      if (reloading) {
        reloadAgain = true
        return
      }
      reloading = reload().finally(() => {
        reloading = null
        if (reloadAgain) {
          reloadAgain = false
          onHup()
        }
      })
    }

    let stopping = false
    const onStop = (signal: string): void => {
      if (stopping) return
      stopping = true
      log.info({ signal }, 'stopping')
      void notifySystemd('STOPPING=1')
      if (http) http.ready = false
      void Promise.allSettled([sni.stop(config.sni.shutdownGraceMs), dns.stop()])
        .then(() => Promise.allSettled([http?.stop(), firewall?.stop()]))
        .then(() => {
          process.off('SIGHUP', onHup)
          clearInterval(suppressedTimer)
          log.info('stopped')
          log.flush?.()
          resolve(0)
        })
    }

    const suppressedTimer = setInterval(() => {
      const dnsLines = dns.takeSuppressedLogLines()
      const sniLines = sni.logLimiter.takeSuppressed()
      if (dnsLines + sniLines > 0) log.warn({ dns: dnsLines, sni: sniLines }, 'per-event log lines suppressed by the rate limit')
    }, SUPPRESSED_REPORT_MS)
    suppressedTimer.unref()

    process.on('SIGHUP', onHup)
    process.once('SIGTERM', () => onStop('SIGTERM'))
    process.once('SIGINT', () => onStop('SIGINT'))
  })
}

