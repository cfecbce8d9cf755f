/**
 * The Daemon: loads and compiles a configuration, then starts, reloads and stops its
 * components (components.ts) as one. No process concerns here: signals, exit codes
 * and stdout belong to the command line (src/cli.ts), so tests drive a Daemon in-process.
 *
 *   new ─start()─▶ running ─stop()─▶ stopped
 *                    │ reload(): load + compile in a worker thread, then apply to every component at once
 *
 * A reload or stop requested while the daemon is still starting waits for the start to
 * end; reload requests that arrive during a reload are folded into one more reload.
 */
import { upstreamLabel } from '../config/upstream.js'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { ConfigErrors, EgressdError, ListenError } from '../errors.js'
import { loadConfig, type LoadOptions } from '../config/load.js'
import { formatHostPort } from '../net/host-port.js'
import { createLogger, type Logger } from '../log/logger.js'
import { notifySystemd } from '../log/sd-notify.js'
import type { NftRunner } from '../firewall/nftables-sink.js'
import { version } from '../version.js'
import { entriesKey } from '../policy/packed-entries.js'
import { compileConfig, type CompiledConfig } from './compiled-config.js'
import { ReloadWorker, ReloadWorkerError, type Prepared } from './reload.js'
import { buildComponents, restartKey, type Component } from './components.js'

/** Per-event lines (blocked queries and connections) beyond the limiters are summed up this often. */
const SUPPRESSED_REPORT_MS = 10_000

export interface DaemonOptions {
  /** Default: JSON lines on stdout at the configuration's level. */
  readonly log?: Logger
  readonly load?: LoadOptions
  readonly nftRunner?: NftRunner
}

export type ReloadResult = { ok: true; rules: number } | { ok: false; errors: string[] }

/** A component could not start (a listener, the firewall sink); everything already started has been stopped again. */
export class StartError extends EgressdError {
  constructor(override readonly cause: unknown) {
    super('ESTART', cause instanceof ListenError ? cause.message : `cannot start: ${(cause as Error)?.message ?? String(cause)}`)
  }
}

export class Daemon {
  readonly log: Logger
  readonly registry = new Registry()
  private compiled: CompiledConfig
  private readonly parts: ReturnType<typeof buildComponents>
  private phase: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new'
  private started: Promise<void> | null = null
  private stopped: Promise<void> | null = null
  private reloading: Promise<ReloadResult> | null = null
  private reloadAgain = false
  private suppressedTimer: NodeJS.Timeout | null = null
  private readonly worker: ReloadWorker

  /**
   * Loads and compiles `file` in a worker thread (as a reload does), so that the event
   * loop's heap never holds the parsed file: at 1 M entries, a start-up on the event loop
   * left a 1.4–1.9 GB heap whose first collection, after the first reload, stalled
   * queries for 1.2 s (bench/RESULTS.md, reload section). Rejects with ConfigErrors when
   * the file is not valid.
   */
  static async open(file: string, options: DaemonOptions = {}): Promise<Daemon> {
    const worker = new ReloadWorker()
    try {
      return new Daemon(file, options, await worker.prepare(file, options.load, []), worker)
    } catch (e) {
      await worker.close()
      throw e
    }
  }

  /**
   * Loads and compiles `file` on the calling thread (or takes what a worker prepared);
   * throws ConfigErrors when it is not valid.
   */
  constructor(
    readonly file: string,
    private readonly options: DaemonOptions = {},
    prepared?: Prepared,
    worker?: ReloadWorker,
  ) {
    const loaded = prepared ?? loadConfig(file, options.load)
    const config = loaded.config
    this.compiled = compileConfig(config, null, prepared?.pre)
    this.worker = worker ?? new ReloadWorker()
    this.log = options.log ?? createLogger(config.log.level)
    this.logWarnings(loaded.warnings)
    collectDefaultMetrics({ register: this.registry })
    // prom-client exports these gauges with a _total suffix that promtool's lint rejects;
    // nodejs_active_handles/requests/resources carry the same numbers without it.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name)
    this.parts = buildComponents(this.compiled, { log: this.log, registry: this.registry, nftRunner: options.nftRunner })
  }

  get components(): readonly Component[] {
    return this.parts.components
  }

  get config(): CompiledConfig['config'] {
    return this.compiled.config
  }

  /** Where the listeners are bound (ports chosen by the kernel included), once started. */
  get addresses() {
    return {
      dns: this.parts.dns.boundAddresses,
      sni: this.parts.sni.boundAddresses,
      metrics: this.parts.http?.address ?? null,
    }
  }

  /** Binds every listener, tier by tier; on failure stops what started and rejects with StartError. */
  start(): Promise<void> {
    this.started ??= this.startOnce()
    return this.started
  }

  private async startOnce(): Promise<void> {
    this.phase = 'starting'
    // A component that failed half-way (UDP bound, TCP refused) holds sockets too: every
    // component that was asked to start is asked to stop, not only those that finished.
    const attempted: Component[] = []
    try {
      for (const tier of tiers(this.components)) {
        attempted.push(...tier)
        // Settled, not Promise.all: a sibling still binding when another fails would
        // otherwise bind after the clean-up below and keep its listener.
        const failed = (await Promise.allSettled(tier.map((c) => c.start()))).find((r) => r.status === 'rejected')
        if (failed !== undefined) throw failed.reason
      }
    } catch (e) {
      await Promise.allSettled(attempted.map((c) => c.stop()))
      await this.worker.close()
      this.phase = 'stopped'
      throw new StartError(e)
    }
    for (const c of this.components) c.ready?.(true)
    this.phase = 'running'
    const config = this.compiled.config
    this.log.info({
      config: this.file,
      dns: config.dns.listen.map(formatHostPort),
      sni: config.sni.listen.map(formatHostPort),
      metrics: config.metrics.listen ? formatHostPort(config.metrics.listen) : null,
      upstreams: config.dns.upstreams.map(upstreamLabel),
      rules: this.compiled.groups.ruleCount,
      groups: groupSummary(this.compiled),
      version: version(),
    }, 'ready')
    this.suppressedTimer = setInterval(() => this.reportSuppressed(), SUPPRESSED_REPORT_MS)
    this.suppressedTimer.unref()
    await notifySystemd('READY=1')
  }

  /**
   * Re-reads and compiles the file in a worker thread (reload.ts) and applies it to every
   * component in one synchronous pass; a bad file keeps the running configuration. Concurrent calls share
   * the reload in progress plus at most one more. Before start has ended, it waits for it.
   */
  reload(): Promise<ReloadResult> {
    if (this.reloading !== null) {
      this.reloadAgain = true
      return this.reloading
    }
    const run = async (): Promise<ReloadResult> => {
      if (this.started !== null) await this.started.catch(() => {})
      let result: ReloadResult
      do {
        this.reloadAgain = false
        result = await this.reloadOnce()
      } while (this.reloadAgain && this.phase === 'running')
      return result
    }
    this.reloading = run().finally(() => (this.reloading = null))
    return this.reloading
  }

  private async reloadOnce(): Promise<ReloadResult> {
    if (this.phase !== 'running') return { ok: false, errors: [`not running (${this.phase})`] }
    const metrics = this.parts.metrics
    try {
      // Read, parse, validate and compile in a worker thread (reload.ts); lists that did
      // not change keep their compiled policy (content-keyed in GroupSet), so the worker
      // skips them.
      const known = this.compiled.groups.keys
      const exempt = this.compiled.config.dns.rebindExempt
      if (exempt.length > 0) known.push(entriesKey(exempt))
      const asked = performance.now()
      const { config: next, pre, warnings, assembleMs } = await this.worker.prepare(this.file, this.options.load, known)
      const prepared = performance.now()
      if (this.phase !== 'running') return { ok: false, errors: [`not running (${this.phase})`] }
      // Only assembly is left for the event loop: every policy comes compiled.
      const compiled = compileConfig(next, this.compiled, pre)
      if (restartKey(next) !== restartKey(this.compiled.config)) {
        this.log.warn('listen addresses or firewall.nftables enabled/table changed: they take effect only after a restart; everything else is applied now')
      }
      // The swap below is synchronous, so a query sees either the old configuration or
      // the new one, never a mix.
      for (const c of this.components) c.apply(compiled)
      this.compiled = compiled
      metrics.reloads.inc({ result: 'success' })
      this.logWarnings(warnings)
      // prepare_ms: the worker's read, parse and compile (off the event loop); apply_ms: what
      // the event loop itself spent (assembling the worker's message into Policies,
      // compileConfig and the swap), the figure a stall would show in.
      const applied = performance.now()
      this.log.info({
        rules: compiled.groups.ruleCount,
        groups: groupSummary(compiled),
        prepare_ms: Math.round(prepared - asked),
        apply_ms: Math.round((applied - prepared + assembleMs) * 10) / 10,
      }, 'configuration reloaded')
      return { ok: true, rules: compiled.groups.ruleCount }
    } catch (e) {
      if (!(e instanceof ConfigErrors) && !(e instanceof ReloadWorkerError)) throw e
      metrics.reloads.inc({ result: 'failure' })
      metrics.lastReloadSuccessful.set(0)
      const errors = e instanceof ConfigErrors ? e.errors.map((x) => x.message) : [e.message]
      for (const error of errors) this.log.error({ error }, 'reload failed; the running configuration stays')
      this.parts.ui?.reloadFailed(errors)
      return { ok: false, errors }
    }
  }

  /**
   * Stops accepting, answers DNS queries in flight, gives spliced TLS connections
   * `sni.shutdown_grace_ms`, then closes the rest, tier by tier in reverse. Waits for a
   * start in progress first. Idempotent.
   */
  stop(reason = 'stop'): Promise<void> {
    this.stopped ??= this.stopOnce(reason)
    return this.stopped
  }

  private async stopOnce(reason: string): Promise<void> {
    if (this.started !== null) await this.started.catch(() => {})
    if (this.phase === 'stopped') return
    this.phase = 'stopping'
    this.log.info({ signal: reason }, 'stopping')
    void notifySystemd('STOPPING=1')
    for (const c of this.components) c.ready?.(false)
    for (const tier of tiers(this.components).reverse()) await Promise.allSettled(tier.map((c) => c.stop()))
    if (this.suppressedTimer !== null) clearInterval(this.suppressedTimer)
    await this.worker.close()
    this.phase = 'stopped'
    this.log.info('stopped')
    this.log.flush?.()
  }

  /** What `egressd validate` prints as warnings, in the log: they never stop a start or a reload. */
  private logWarnings(warnings: readonly string[]): void {
    for (const warning of warnings) this.log.warn({ warning }, 'configuration warning')
  }

  private reportSuppressed(): void {
    const { dns, sni } = this.parts.takeSuppressed()
    if (dns + sni > 0) this.log.warn({ dns, sni }, 'per-event log lines suppressed by the rate limit')
  }
}

/** Components grouped by tier, lowest first. */
function tiers(components: readonly Component[]): Component[][] {
  const byTier = new Map<number, Component[]>()
  for (const c of components) byTier.set(c.tier, [...(byTier.get(c.tier) ?? []), c])
  return [...byTier.keys()].sort((a, b) => a - b).map((t) => byTier.get(t)!)
}

function groupSummary(c: CompiledConfig): string[] {
  return c.groups.groups.map((g) => (g.mode === 'report' ? `${g.name} (report)` : g.name))
}
