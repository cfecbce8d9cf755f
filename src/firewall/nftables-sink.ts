import type { Registry } from 'prom-client'
import type { Config } from '../config/types.js'
import { InvalidArgumentError } from '../errors.js'
import { ipFamily } from '../net/address.js'
import type { AnswerAddress } from '../dns/answer-sink.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { Rule } from '../policy/types.js'
import { firewallMetrics, type FirewallMetrics } from './metrics.js'
import {
  batchScript, clampTimeout, declareScript, elementKey, isValidTableName, refreshProbeResult, refreshProbeScripts, type RefreshMode, type SetBatch,
} from './nft-script.js'
import { SpawnNftRunner, type NftRunner } from './nft-runner.js'

export type { NftRunner } from './nft-runner.js'
export { SpawnNftRunner } from './nft-runner.js'

export type NftablesConfig = Config['firewall']['nftables']

export interface NftablesSinkDeps {
  readonly log: Logger
  readonly registry: Registry
  /** Default: `nft -f -` in this process's network namespace. */
  readonly runner?: NftRunner
  /** Milliseconds; injected by tests to step through timeouts. */
  readonly now?: () => number
  /**
   * Elements remembered for dedupe (default 65 536, ~100 bytes each). An element
   * forgotten here is simply written again on its next answer.
   */
  readonly maxKnown?: number
  /**
   * Elements that may wait for one batch (default 16 384): past it, answers go out
   * without their elements (counted as queue_full) rather than memory growing while
   * nft is slow. 10 000 elements take ~0.3 s in one run here (bench/RESULTS.md, firewall section).
   */
  readonly maxPending?: number
}

/** One nft run's worth of elements and the callers waiting for it. */
class Batch {
  readonly v4: SetBatch = { keys: [], timeouts: [] }
  readonly v6: SetBatch = { keys: [], timeouts: [] }
  readonly promise: Promise<void>
  resolve!: () => void

  constructor(readonly seq: number) {
    this.promise = new Promise((r) => (this.resolve = r))
  }

  get size(): number {
    return this.v4.keys.length + this.v6.keys.length
  }
}

/** What the sink last wrote (or is writing) for one element. */
interface Known {
  /** When the element expires in the kernel once its batch is applied, ms. */
  expiresAt: number
  /** The batch writing it, until that batch ends; then null. */
  batch: Batch | null
  /** Its index in `batch.v4/v6`, to raise a timeout instead of writing the element twice. */
  index: number
}

const RESOLVED: Promise<void> = Promise.resolve()

/**
 * Puts the addresses of allowed DNS answers into nftables sets `allow4`/`allow6` of its
 * own `inet` table, as `address . protocol . port` elements with timeout = TTL + grace.
 *
 * Batching: the first element to arrive while idle schedules a run on the next
 * `setImmediate`, so all answers handled in the same event-loop turn share it; elements
 * arriving while nft runs go into the next single run. `add()` resolves once the batch
 * holding its elements has been applied (the device's first packet must find them).
 *
 * `add()` never rejects: an nft failure is counted, logged (rate-limited) and the
 * promise resolves, so the DNS answer still goes out. A failed batch is retried once,
 * with the table and sets declared again first: the common cause is an operator's
 * `nft flush ruleset` (Debian's /etc/nftables.conf starts with one).
 */
export class NftablesSink {
  private cfg: NftablesConfig
  private readonly table: string
  private readonly log: Logger
  private readonly runner: NftRunner
  private readonly now: () => number
  private readonly maxKnown: number
  private readonly maxPending: number
  readonly metrics: FirewallMetrics
  private readonly logLimiter = new LogLimiter(1)

  /** Insertion order is write order: the first key is the one written longest ago. */
  private readonly known = new Map<string, Known>()
  private pending: Batch | null = null
  private running: Batch | null = null
  private scheduled = false
  private seq = 0
  private stopped = false
  private readonly addedSlot4: number
  private readonly addedSlot6: number
  /** add-delete-add until the start-up probe shows this kernel refreshes on a plain add. */
  private refresh: RefreshMode = 'add-delete-add'

  constructor(cfg: NftablesConfig, deps: NftablesSinkDeps) {
    if (!isValidTableName(cfg.table)) throw new InvalidArgumentError(`invalid nftables table name ${JSON.stringify(cfg.table)}`)
    this.cfg = cfg
    this.table = cfg.table
    this.log = deps.log
    this.runner = deps.runner ?? new SpawnNftRunner()
    this.now = deps.now ?? Date.now
    this.maxKnown = Math.max(1, deps.maxKnown ?? 65_536)
    this.maxPending = Math.max(1, Math.min(deps.maxPending ?? 16_384, this.maxKnown))
    this.metrics = firewallMetrics(deps.registry, () => (this.pending?.size ?? 0) + (this.running?.size ?? 0))
    this.addedSlot4 = this.metrics.added.slot('ipv4')
    this.addedSlot6 = this.metrics.added.slot('ipv6')
  }

  /**
   * Creates the table and sets when missing; keeps them and their elements when they
   * exist. Never rejects: DNS runs on without the sink, and each failed batch later
   * declares the table again, so the sink recovers once nft works.
   */
  async start(): Promise<void> {
    const t0 = this.now()
    try {
      await this.runner.run(declareScript(this.table))
    } catch (err) {
      this.metrics.errors.incLabel('start')
      this.log.error({ err, table: this.table }, 'nftables table or sets could not be created; DNS continues without firewall elements')
      return
    }
    this.refresh = await this.probeRefresh()
    this.log.info({ table: this.table, refresh: this.refresh, ms: this.now() - t0 }, 'nftables sets ready')
  }

  /** How this sink writes elements that may exist already (see RefreshMode). */
  get refreshMode(): RefreshMode {
    return this.refresh
  }

  /**
   * Asks the running kernel whether a plain `add element` refreshes an element's
   * timeout, in a scratch table named after this process. Any failure means no: the
   * three-command way is right on every kernel. Costs four nft runs, once.
   */
  private async probeRefresh(): Promise<RefreshMode> {
    const query = this.runner.query?.bind(this.runner)
    if (query === undefined) return 'add-delete-add'
    const scripts = refreshProbeScripts(`egressd_probe_${process.pid}`)
    let mode: RefreshMode = 'add-delete-add'
    try {
      await this.runner.run(scripts.create)
      await this.runner.run(scripts.readd)
      mode = refreshProbeResult(await query(scripts.list))
    } catch (err) {
      this.log.warn({ err }, 'nftables refresh probe failed; writing elements as add, delete, add')
    }
    await this.runner.run(scripts.remove).catch(() => {})
    return mode
  }

  add(name: string, rule: Rule, addresses: readonly AnswerAddress[]): Promise<void> {
    if (this.stopped || addresses.length === 0 || rule.ports.length === 0) return RESOLVED
    const now = this.now()
    const grace = this.cfg.graceSeconds
    let wait: Batch | null = null
    for (let a = 0; a < addresses.length; a++) {
      const { address, ttl } = addresses[a]!
      // The address is pasted into an nft script: only an IP literal, and no zone
      // index (fe80::1%eth0), ever gets there.
      const family = ipFamily(address)
      if (family === 0 || address.includes('%')) {
        this.metrics.errors.incLabel('invalid_address')
        if (this.logLimiter.allow(now)) this.log.warn({ name, address }, 'firewall sink ignored an address that is not an IP literal')
        continue
      }
      const timeout = clampTimeout(ttl + grace)
      const ms = timeout * 1000
      for (let p = 0; p < rule.ports.length; p++) {
        const port = rule.ports[p]!
        const key = elementKey(address, port.proto, port.port)
        const k = this.known.get(key)
        if (k !== undefined && k.expiresAt - now > ms / 2) {
          // Written recently enough: a cache-hit refresh costs a Map lookup. If its
          // batch is still on its way, this answer waits for that batch too.
          this.metrics.skipped.inc(0)
          if (k.batch !== null && (wait === null || k.batch.seq > wait.seq)) wait = k.batch
          continue
        }
        const batch = this.enqueue(key, family === 4, timeout, now + ms, k)
        if (batch === null) {
          this.metrics.errors.incLabel('queue_full')
          if (this.logLimiter.allow(now)) this.log.error({ name, pending: this.pending?.size }, 'firewall sink queue full: answer sent without its set elements')
          continue
        }
        if (wait === null || batch.seq > wait.seq) wait = batch
      }
    }
    return wait === null ? RESOLVED : wait.promise
  }

  /** Reload: the grace applies to elements written from now on. */
  update(cfg: NftablesConfig): void {
    if (cfg.table !== this.table) {
      this.log.warn({ table: this.table, wanted: cfg.table }, 'firewall.nftables.table changes need a restart; keeping the current table')
    }
    if (cfg.enabled !== this.cfg.enabled) {
      this.log.warn({ enabled: cfg.enabled }, 'firewall.nftables.enabled changes need a restart')
    }
    this.cfg = { ...cfg, table: this.table }
  }

  /**
   * Writes what is queued, then stops taking elements. The table and its elements stay:
   * they expire on their own, and devices keep working through a restart.
   */
  async stop(): Promise<void> {
    this.stopped = true
    while (this.running !== null || this.pending !== null) {
      if (this.running === null) this.flush()
      await (this.running ?? this.pending)?.promise
    }
  }

  /** Elements remembered for dedupe (tests and the benchmark read it). */
  get knownSize(): number {
    return this.known.size
  }

  private enqueue(key: string, v4: boolean, timeout: number, expiresAt: number, k: Known | undefined): Batch | null {
    let batch = this.pending
    if (k !== undefined && k.batch !== null && k.batch === batch) {
      // Already queued with a shorter timeout: raise it in place (no duplicate element).
      const set = v4 ? batch.v4 : batch.v6
      if (set.timeouts[k.index]! < timeout) set.timeouts[k.index] = timeout
      if (k.expiresAt < expiresAt) k.expiresAt = expiresAt
      return batch
    }
    if (batch === null) {
      batch = this.pending = new Batch(++this.seq)
    } else if (batch.size >= this.maxPending) {
      return null
    }
    const set = v4 ? batch.v4 : batch.v6
    const index = set.keys.length
    set.keys.push(key)
    set.timeouts.push(timeout)
    if (k !== undefined) {
      // Move to the young end: eviction takes the element written longest ago.
      this.known.delete(key)
      k.expiresAt = expiresAt
      k.batch = batch
      k.index = index
      this.known.set(key, k)
    } else {
      if (this.known.size >= this.maxKnown) this.evictOldest()
      this.known.set(key, { expiresAt, batch, index })
    }
    if (this.running === null && !this.scheduled) {
      this.scheduled = true
      setImmediate(this.flushScheduled)
    }
    return batch
  }

  private evictOldest(): void {
    const first = this.known.keys().next()
    if (!first.done) this.known.delete(first.value)
  }

  private readonly flushScheduled = (): void => {
    this.scheduled = false
    if (this.running === null) this.flush()
  }

  private flush(): void {
    const batch = this.pending
    if (batch === null) return
    this.pending = null
    this.running = batch
    void this.apply(batch).then(() => {
      this.running = null
      batch.resolve()
      if (this.pending !== null) this.flush()
    })
  }

  private async apply(batch: Batch): Promise<void> {
    const started = process.hrtime.bigint()
    let error: unknown = null
    try {
      await this.runner.run(batchScript(this.table, batch.v4, batch.v6, false, this.refresh))
    } catch (first) {
      try {
        await this.runner.run(batchScript(this.table, batch.v4, batch.v6, true, this.refresh))
        this.log.warn({ err: first, table: this.table }, 'nftables batch failed, then applied after declaring the table and sets again (was the ruleset flushed?)')
      } catch (second) {
        error = second
      }
    }
    this.metrics.batchSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9)
    this.release(batch, error === null)
    if (error === null) {
      this.metrics.batches.incLabel('applied')
      this.metrics.added.inc(this.addedSlot4, batch.v4.keys.length)
      this.metrics.added.inc(this.addedSlot6, batch.v6.keys.length)
      return
    }
    this.metrics.batches.incLabel('failed')
    this.metrics.errors.incLabel('nft')
    if (this.logLimiter.allow(this.now())) {
      this.log.error({ err: error, table: this.table, elements: batch.size }, 'nftables batch failed; answers sent without their set elements')
    }
  }

  /** After a run: applied elements are known; failed ones are forgotten so their next answer retries. */
  private release(batch: Batch, applied: boolean): void {
    for (const set of [batch.v4, batch.v6]) {
      for (let i = 0; i < set.keys.length; i++) {
        const key = set.keys[i]!
        const k = this.known.get(key)
        if (k === undefined || k.batch !== batch) continue
        if (applied) k.batch = null
        else this.known.delete(key)
      }
    }
  }
}
