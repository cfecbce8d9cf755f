import type { Registry } from 'prom-client'
import type { Config } from '../config/types.js'
import { InvalidArgumentError } from '../errors.js'
import { ipFamily } from '../net/address.js'
import type { AllowedAnswerSink, AnswerAddress } from '../dns/answer-sink.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { Rule } from '../policy/types.js'
import { firewallMetrics, type FirewallMetrics } from './metrics.js'
import { DeviceElements, type DeviceElement } from './device-elements.js'
import {
  batchScript, clampTimeout, declareScript, deviceElementKey, elementKey, isValidTableName, parseSetListing, refreshProbeResult, refreshProbeScripts, retireScripts,
  SCOPE_SETS, setGroup, type DeviceKey, type ListedElement, type RefreshMode, type Scope, type SetBatch, type SetGroup,
} from './nft-script.js'
import { KernelNeighbours, NeighbourTable, normalizeMac } from './neighbours.js'
import { CHAIN_CONFIG, forwardChainArgs, forwardScopeChains, judgeRulesetScope, RULESET_SCOPE_VALUE, SCOPE_CHAINS, type RulesetScope } from './ruleset-scope.js'
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
  /** device_key mac: where MACs come from (default: this kernel's neighbour tables). */
  readonly neighbours?: NeighbourTable
  /**
   * How often the ruleset's scope is checked again between reloads (default 60 000 ms;
   * 0: only at start and reload), so the mismatch gauge and its alert clear within a
   * minute of the operator loading a fixed ruleset. One `nft -j list chain` each.
   */
  readonly rulesetCheckMs?: number
}

/** One nft run's worth of elements and the callers waiting for it. */
class Batch {
  readonly v4: SetBatch = { keys: [], timeouts: [] }
  readonly v6: SetBatch = { keys: [], timeouts: [] }
  /** Scope device: the device of `v4.keys[i]` / `v6.keys[i]`, to find its book entry. */
  readonly clients4: string[] = []
  readonly clients6: string[] = []
  /** Scope device: elements to delete (evicted by a bound), none of them among the live keys. */
  readonly evict4 = new Set<string>()
  readonly evict6 = new Set<string>()
  readonly promise: Promise<void>
  resolve!: () => void

  constructor(readonly seq: number) {
    this.promise = new Promise((r) => (this.resolve = r))
  }

  get size(): number {
    return this.v4.keys.length + this.v6.keys.length + this.evict4.size + this.evict6.size
  }

  /** What the script builder reads. */
  sets(): [SetBatch, SetBatch] {
    return [
      this.evict4.size === 0 ? this.v4 : { ...this.v4, evict: [...this.evict4] },
      this.evict6.size === 0 ? this.v6 : { ...this.v6, evict: [...this.evict6] },
    ]
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

/** Bytes of `nft -j list set` per element, generously: the start-up listing's output cap is this times the bound. */
const LISTING_BYTES_PER_ELEMENT = 256

/**
 * Puts the addresses of allowed DNS answers into nftables sets of its own `inet` table,
 * with timeout = TTL + grace:
 * - scope `shared`: `address . protocol . port` in allow4/allow6 (every device);
 * - scope `device`: `client . address . protocol . port` in allow4_dev/allow6_dev (only
 *   the device that asked), bounded per device and in total (DeviceElements).
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
  readonly scope: Scope
  readonly deviceKey: DeviceKey
  /** The sets written: the scope's, and in scope device the device key's. */
  readonly group: SetGroup
  /** device_key mac only. */
  private readonly neighbours: NeighbourTable | null
  /** device_key mac: the last "no neighbour entry" line, and misses since (one line a minute). */
  private noNeighbourLoggedAt = -Infinity
  private noNeighbourSince = 0
  private readonly log: Logger
  private readonly runner: NftRunner
  private readonly now: () => number
  private readonly maxKnown: number
  private readonly maxPending: number
  readonly metrics: FirewallMetrics
  private readonly logLimiter = new LogLimiter(1)

  /** Scope shared: insertion order is write order; the first key is the one written longest ago. */
  private readonly known = new Map<string, Known>()
  /** Scope device: every element each device holds, bounded. */
  private readonly book: DeviceElements
  private pending: Batch | null = null
  private running: Batch | null = null
  private scheduled = false
  private seq = 0
  private stopped = false
  private readonly addedSlot4: number
  private readonly addedSlot6: number
  /** add-delete-add until the start-up probe shows this kernel refreshes on a plain add. */
  private refresh: RefreshMode = 'add-delete-add'
  /** The mismatch last logged (its other chains), so a reload that finds the same one logs nothing. */
  private loggedMismatch: string | null = null
  /** The ruleset check running, and whether a reload asked for another after it. */
  private checking: Promise<RulesetScope> | null = null
  private checkAgain = false
  private rulesetTimer: NodeJS.Timeout | null = null
  private readonly rulesetCheckMs: number

  constructor(cfg: NftablesConfig, deps: NftablesSinkDeps) {
    if (!isValidTableName(cfg.table)) throw new InvalidArgumentError(`invalid nftables table name ${JSON.stringify(cfg.table)}`)
    this.cfg = cfg
    this.table = cfg.table
    this.scope = cfg.scope
    this.deviceKey = cfg.deviceKey
    this.group = setGroup(cfg.scope, cfg.deviceKey)
    this.log = deps.log
    this.runner = deps.runner ?? new SpawnNftRunner()
    this.now = deps.now ?? Date.now
    this.maxKnown = Math.max(1, deps.maxKnown ?? 65_536)
    this.rulesetCheckMs = deps.rulesetCheckMs ?? 60_000
    this.maxPending = Math.max(1, Math.min(deps.maxPending ?? 16_384, this.maxKnown))
    this.book = new DeviceElements(cfg.maxElementsPerDevice, cfg.maxElements)
    this.metrics = firewallMetrics(deps.registry, {
      pending: () => (this.pending?.size ?? 0) + (this.running?.size ?? 0),
      elements: () => (this.scope === 'device' ? this.book.size : this.known.size),
      devices: () => this.book.deviceCount,
    })
    this.metrics.rulesetScope.set(RULESET_SCOPE_VALUE.unknown)
    this.addedSlot4 = this.metrics.added.slot('ipv4')
    this.addedSlot6 = this.metrics.added.slot('ipv6')
    const reads = { 4: this.metrics.neighbourReads.slot('ipv4'), 6: this.metrics.neighbourReads.slot('ipv6') }
    this.neighbours = this.group !== 'mac' ? null : deps.neighbours ?? new NeighbourTable(new KernelNeighbours(), this.now, {
      onRead: (family, ok, err) => {
        this.metrics.neighbourReads.inc(reads[family])
        if (ok) return
        this.metrics.errors.incLabel('neighbour_read')
        if (this.logLimiter.allow(this.now())) this.log.error({ err, family }, 'the kernel\'s neighbour table could not be read; answers open nothing until it can')
      },
    })
  }

  /**
   * The DNS side's view of this sink (AnswerFeed): in scope `device` it is called for
   * every allowed answer of every client, cache hits included, because each device
   * needs its own elements; nothing to wait for returns undefined, so a hit whose
   * elements are fresh stays a synchronous answer.
   */
  answerSink(): AllowedAnswerSink {
    const sink = (a: { name: string; rule: Rule; addresses: readonly AnswerAddress[]; client: string }) => {
      const p = this.add(a.name, a.rule, a.addresses, a.client)
      return p === RESOLVED ? undefined : p
    }
    return Object.assign(sink, { perClient: this.scope === 'device' })
  }

  /**
   * Creates the table and this scope's sets when missing; keeps them and their
   * elements when they exist, and in scope `device` reads them back so the bounds count
   * what an earlier process wrote. Empties (and where no rule names them, deletes) the
   * other scope's sets. Never rejects: DNS runs on without the sink, and each failed
   * batch later declares the table again, so the sink recovers once nft works.
   */
  async start(): Promise<void> {
    const t0 = this.now()
    try {
      await this.runner.run(declareScript(this.table, this.group))
    } catch (err) {
      this.metrics.errors.incLabel('start')
      this.log.error({ err, table: this.table }, 'nftables table or sets could not be created; DNS continues without firewall elements')
      return
    }
    const retired = await this.retireOtherScope()
    const reconciled = this.group !== 'shared' ? await this.reconcile() : 0
    this.refresh = await this.probeRefresh()
    const ruleset = await this.checkRuleset()
    if (this.rulesetCheckMs > 0 && !this.stopped) {
      this.rulesetTimer = setInterval(() => void this.checkRuleset(), this.rulesetCheckMs)
      this.rulesetTimer.unref()
    }
    this.log.info({ table: this.table, scope: this.scope, deviceKey: this.scope === 'device' ? this.deviceKey : undefined, sets: SCOPE_SETS[this.group], refresh: this.refresh, reconciled, otherScope: retired, ruleset, ms: this.now() - t0 }, 'nftables sets ready')
  }

  /**
   * Reads the forward chain of this sink's table and tells whether it jumps to the
   * scope chain of the sets this sink fills (config/nftables/egressd.nft, define
   * EGRESSD_SCOPE). A mismatch drops every device while egressd looks healthy, so it
   * is logged as an error (once per distinct mismatch) and set in
   * egressd_firewall_ruleset_scope_match. No forward chain, or one that names no scope
   * chain, is the operator's own ruleset: unknown, never an error. Never rejects; calls
   * made while one runs share a single further run.
   */
  checkRuleset(): Promise<RulesetScope> {
    if (this.checking !== null) {
      // The running check may have read the chain before the change: one more run after it, shared.
      this.checkAgain = true
      return this.checking
    }
    const run = this.readRulesetScope().then((verdict) => {
      this.checking = null
      if (this.checkAgain) {
        this.checkAgain = false
        return this.checkRuleset()
      }
      return verdict
    })
    this.checking = run
    return run
  }

  private async readRulesetScope(): Promise<RulesetScope> {
    const query = this.runner.query?.bind(this.runner)
    let listing: string | null = null
    if (query !== undefined) {
      try {
        listing = await query(forwardChainArgs(this.table))
      } catch (err) {
        // "No such file or directory": no such table or chain, the operator's own ruleset.
        if (!/No such file or directory/.test(String((err as Error | null)?.message))) this.log.warn({ err, table: this.table }, "could not read the forward chain to check the ruleset's scope")
      }
    }
    const own = SCOPE_CHAINS[this.group]
    const found = listing === null ? null : forwardScopeChains(listing)
    const { verdict, others } = judgeRulesetScope(found, this.group)
    this.metrics.rulesetScope.set(RULESET_SCOPE_VALUE[verdict])
    if (verdict !== 'mismatch') {
      if (this.loggedMismatch !== null && verdict === 'match') this.log.info({ table: this.table, chain: own }, "the ruleset's forward chain now reads the sets egressd fills")
      this.loggedMismatch = null
      return verdict
    }
    const key = others.join(',')
    if (this.loggedMismatch !== key) {
      this.loggedMismatch = key
      this.log.error(
        { table: this.table, scope: this.scope, deviceKey: this.deviceKey, jumpsTo: found, expected: own, fix: `define EGRESSD_SCOPE = "${own}"` },
        `the ruleset's forward chain (table inet ${this.table}) jumps to ${others.join(' and ')}, whose sets egressd does not fill: devices are dropped. ` +
          `Set define EGRESSD_SCOPE = "${own}" in the ruleset and load it, or configure firewall.nftables ${CHAIN_CONFIG[others[0]!]} and restart; egressd checks again every minute and at each reload`,
      )
    }
    return verdict
  }

  /**
   * After a switch of scope or device key the old elements must open nothing: the other
   * groups' sets are flushed, then deleted unless a rule still names them (the shipped
   * ruleset declares every group's sets, so they stay there, empty). 'removed' when
   * every other group's sets are gone.
   */
  private async retireOtherScope(): Promise<'removed' | 'emptied' | 'failed'> {
    const scripts = retireScripts(this.table, this.group)
    try {
      await this.runner.run(scripts.empty)
    } catch (err) {
      this.metrics.errors.incLabel('start')
      this.log.error({ err, table: this.table }, 'the sets of the other firewall scope could not be emptied')
      return 'failed'
    }
    let result: 'removed' | 'emptied' = 'removed'
    for (const remove of scripts.remove) {
      try {
        await this.runner.run(remove)
      } catch {
        result = 'emptied'
      }
    }
    return result
  }

  /**
   * Scope device: reads this scope's sets back into the book (elements survive a
   * restart; the bounds must count them), soonest expiry first, and deletes what is
   * over the bounds now (lower bounds than the last process had). Returns the
   * elements read.
   */
  private async reconcile(): Promise<number> {
    const query = this.runner.query?.bind(this.runner)
    if (query === undefined) return 0
    const now = this.now()
    const maxBytes = Math.max(1 << 20, this.cfg.maxElements * LISTING_BYTES_PER_ELEMENT * 2)
    // Both sets first, then soonest expiry first across them: with device_key mac one
    // device holds elements in both, and a bound must trim its soonest, whichever set.
    const all: Array<{ el: ListedElement; v4: boolean }> = []
    for (const v4 of [true, false]) {
      const set = SCOPE_SETS[this.group][v4 ? 0 : 1]
      try {
        for (const el of parseSetListing(await query(['-j', 'list', 'set', 'inet', this.table, set], maxBytes))) all.push({ el, v4 })
      } catch (err) {
        this.log.warn({ err, set }, 'could not read the device set back; its elements expire on their own but are not counted in the bounds')
      }
    }
    all.sort((a, b) => a.el.expires - b.el.expires)
    let n = 0
    for (const { el, v4 } of all) {
      if (el.parts.length !== 4 || el.expires <= 0) continue
      const [first, address, proto, port] = el.parts
      // The key must read back exactly as the sink writes it, or a later delete misses.
      const client = this.group === 'mac' ? normalizeMac(String(first)) : String(first)
      if (client === null) continue
      const key = deviceElementKey(client, String(address), String(proto), Number(port))
      this.makeRoom(client, now)
      this.book.set(client, key, { expiresAt: now + el.expires * 1000, batch: null, index: -1, v4 })
      n++
    }
    if (this.pending !== null) this.flush()
    return n
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

  /**
   * Writes the answer's elements; resolves once they are in the kernel. `client` is
   * the device that asked: scope `device` keys the elements by it (an answer without
   * one opens nothing there), by its address or, with device_key mac, by the MAC the
   * kernel's neighbour table holds for that address; scope `shared` ignores it.
   */
  add(name: string, rule: Rule, addresses: readonly AnswerAddress[], client?: string): Promise<void> {
    if (this.stopped || addresses.length === 0 || rule.ports.length === 0) return RESOLVED
    const now = this.now()
    if (this.scope === 'shared') return this.write(name, rule, addresses, null, 0, now)
    const clientFamily = client === undefined ? 0 : ipFamily(client)
    if (clientFamily === 0 || client!.includes('%')) {
      this.metrics.errors.incLabel('invalid_address')
      if (this.logLimiter.allow(now)) this.log.warn({ name, client }, 'firewall sink ignored an answer whose client is not an IP literal')
      return RESOLVED
    }
    if (this.neighbours === null) {
      this.book.dropExpired(client!, now)
      return this.write(name, rule, addresses, client!, clientFamily, now)
    }
    const mac = this.neighbours.cached(client!)
    if (mac !== undefined) return this.addForMac(name, rule, addresses, client!, mac, now)
    // Only a table read can tell (a new device, or the cache aged out): this answer
    // waits for it, at most minReadIntervalMs plus one read (neighbours.ts).
    return this.neighbours.lookup(client!).then((m) => this.addForMac(name, rule, addresses, client!, m, this.now()))
  }

  /**
   * device_key mac: one MAC holds the elements of both families. No entry: the client
   * is not on-link (or its entry is gone); counted, logged at most once a minute, and
   * the answer leaves without elements.
   */
  private addForMac(name: string, rule: Rule, addresses: readonly AnswerAddress[], client: string, mac: string | null, now: number): Promise<void> {
    if (mac === null) {
      this.metrics.noNeighbour.inc(0)
      this.noNeighbourSince++
      if (now - this.noNeighbourLoggedAt >= 60_000) {
        this.log.warn({ name, client, answers: this.noNeighbourSince }, 'firewall sink: no neighbour entry for the client (not on-link with the gateway?); device_key mac writes nothing for it (egressd_firewall_no_neighbour_total)')
        this.noNeighbourLoggedAt = now
        this.noNeighbourSince = 0
      }
      return RESOLVED
    }
    if (this.stopped) return RESOLVED
    this.book.dropExpired(mac, now)
    return this.write(name, rule, addresses, mac, 0, now)
  }

  /**
   * The elements of one answer: `device` null for scope shared, else the device's
   * identity (address or MAC); `onlyFamily` 4 or 6 keeps only addresses of that
   * family (device_key address: a packet's source and destination share one), 0 all.
   */
  private write(name: string, rule: Rule, addresses: readonly AnswerAddress[], device: string | null, onlyFamily: 0 | 4 | 6, now: number): Promise<void> {
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
      if (onlyFamily !== 0 && family !== onlyFamily) {
        // A packet's source and destination are of one family: no rule can match an
        // IPv4 device with an IPv6 destination (docs/gateway.md, "Scope device").
        this.metrics.crossFamily.inc(0)
        continue
      }
      const timeout = clampTimeout(ttl + grace)
      const ms = timeout * 1000
      for (let p = 0; p < rule.ports.length; p++) {
        const port = rule.ports[p]!
        let batch: Batch | null
        if (device === null) {
          const key = elementKey(address, port.proto, port.port)
          const k = this.known.get(key)
          if (k !== undefined && k.expiresAt - now > ms / 2) {
            // Written recently enough: a cache-hit refresh costs a Map lookup. If its
            // batch is still on its way, this answer waits for that batch too.
            this.metrics.skipped.inc(0)
            if (k.batch !== null && (wait === null || k.batch.seq > wait.seq)) wait = k.batch
            continue
          }
          batch = this.enqueue(key, family === 4, timeout, now + ms, k)
        } else {
          const key = deviceElementKey(device, address, port.proto, port.port)
          const k = this.book.get(device, key)
          if (k !== undefined && k.expiresAt - now > ms / 2) {
            this.metrics.skipped.inc(0)
            const kb = k.batch as Batch | null
            if (kb !== null && (wait === null || kb.seq > wait.seq)) wait = kb
            continue
          }
          batch = this.enqueueDevice(device, key, family === 4, timeout, now, now + ms, k)
        }
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

  /** Reload: the grace and the bounds apply to elements written from now on. */
  update(cfg: NftablesConfig): void {
    if (cfg.table !== this.table) {
      this.log.warn({ table: this.table, wanted: cfg.table }, 'firewall.nftables.table changes need a restart; keeping the current table')
    }
    if (cfg.enabled !== this.cfg.enabled) {
      this.log.warn({ enabled: cfg.enabled }, 'firewall.nftables.enabled changes need a restart')
    }
    if (cfg.scope !== this.scope) {
      this.log.warn({ scope: this.scope, wanted: cfg.scope }, 'firewall.nftables.scope changes need a restart (and the ruleset\'s EGRESSD_SCOPE define); keeping the current scope')
    }
    if (cfg.deviceKey !== this.deviceKey) {
      this.log.warn({ deviceKey: this.deviceKey, wanted: cfg.deviceKey }, 'firewall.nftables.device_key changes need a restart (and the ruleset\'s EGRESSD_SCOPE define); keeping the current device key')
    }
    this.book.perDevice = cfg.maxElementsPerDevice
    this.book.total = cfg.maxElements
    this.cfg = { ...cfg, table: this.table, scope: this.scope, deviceKey: this.deviceKey }
    // A reload is when an operator who just edited EGRESSD_SCOPE learns whether it fits.
    if (!this.stopped) void this.checkRuleset()
  }

  /**
   * Writes what is queued, then stops taking elements. The table and its elements stay:
   * they expire on their own, and devices keep working through a restart.
   */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.rulesetTimer !== null) clearInterval(this.rulesetTimer)
    this.rulesetTimer = null
    while (this.running !== null || this.pending !== null) {
      if (this.running === null) this.flush()
      await (this.running ?? this.pending)?.promise
    }
  }

  /** Elements remembered: for dedupe (shared), or held per device (device). */
  get knownSize(): number {
    return this.scope === 'device' ? this.book.size : this.known.size
  }

  /** Scope device: elements one device holds (tests and the benchmark read it). */
  elementsOf(client: string): number {
    return this.book.sizeOf(client)
  }

  /** The batch new elements go into, made when missing; null when it is full. */
  private openBatch(): Batch | null {
    let batch = this.pending
    if (batch === null) {
      batch = this.pending = new Batch(++this.seq)
    } else if (batch.size >= this.maxPending) {
      return null
    }
    if (this.running === null && !this.scheduled) {
      this.scheduled = true
      setImmediate(this.flushScheduled)
    }
    return batch
  }

  private enqueue(key: string, v4: boolean, timeout: number, expiresAt: number, k: Known | undefined): Batch | null {
    if (raiseQueued(this.pending, v4, k, timeout, expiresAt)) return this.pending
    const batch = this.openBatch()
    if (batch === null) return null
    const index = queueElement(batch, v4, key, timeout)
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
    return batch
  }

  /** Scope device: as enqueue, and a new element first makes room under the bounds. */
  private enqueueDevice(client: string, key: string, v4: boolean, timeout: number, now: number, expiresAt: number, k: DeviceElement | undefined): Batch | null {
    if (raiseQueued(this.pending, v4, k, timeout, expiresAt)) return this.pending
    const batch = this.openBatch()
    if (batch === null) return null
    if (k === undefined) this.makeRoom(client, now)
    const index = queueElement(batch, v4, key, timeout)
    ;(v4 ? batch.clients4 : batch.clients6).push(client)
    // Evicted earlier in this same batch and asked for again: keep it, do not delete it.
    ;(v4 ? batch.evict4 : batch.evict6).delete(key)
    // Re-stored at the young end: eviction takes the element written longest ago.
    this.book.set(client, key, { expiresAt, batch, index, v4 })
    return batch
  }

  /** Deletes elements (from the book now, from the kernel in the next batch) until `client` may hold one more. */
  private makeRoom(client: string, now: number): void {
    for (let v = this.book.victim(client, now); v !== null; v = this.book.victim(client, now)) {
      this.book.delete(v.client, v.key)
      this.metrics.evicted.incLabel(v.bound)
      const batch = this.pending ?? this.openBatch()!
      const e = v.element
      if (e.batch === batch) {
        // Queued, not yet written: written as nothing (timeout 0 is skipped). It may
        // also be an older element being refreshed, so it is deleted all the same.
        ;(e.v4 ? batch.v4 : batch.v6).timeouts[e.index] = 0
      }
      ;(e.v4 ? batch.evict4 : batch.evict6).add(v.key)
    }
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
    const [v4, v6] = batch.sets()
    let error: unknown = null
    try {
      await this.runner.run(batchScript(this.table, v4, v6, false, this.refresh, this.group))
    } catch (first) {
      try {
        await this.runner.run(batchScript(this.table, v4, v6, true, this.refresh, this.group))
        this.log.warn({ err: first, table: this.table }, 'nftables batch failed, then applied after declaring the table and sets again (was the ruleset flushed?)')
      } catch (second) {
        error = second
      }
    }
    this.metrics.batchSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9)
    this.release(batch, error === null)
    if (error === null) {
      this.metrics.batches.incLabel('applied')
      this.metrics.added.inc(this.addedSlot4, written(batch.v4))
      this.metrics.added.inc(this.addedSlot6, written(batch.v6))
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
    if (this.scope === 'device') {
      for (const [set, clients] of [[batch.v4, batch.clients4], [batch.v6, batch.clients6]] as const) {
        for (let i = 0; i < set.keys.length; i++) {
          const key = set.keys[i]!
          const client = clients[i]!
          const k = this.book.get(client, key)
          if (k === undefined || k.batch !== batch) continue
          if (applied) k.batch = null
          else this.book.delete(client, key)
        }
      }
      return
    }
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

/** Elements a batch wrote (those evicted before it ran are not). */
function written(set: SetBatch): number {
  let n = 0
  for (const t of set.timeouts) if (t !== 0) n++
  return n
}

/**
 * An element already queued in `batch` (the pending one): its timeout and expiry are
 * raised in place, so the batch holds no duplicate. False when it is not queued there.
 */
function raiseQueued(batch: Batch | null, v4: boolean, k: { batch: object | null; index: number; expiresAt: number } | undefined, timeout: number, expiresAt: number): boolean {
  if (batch === null || k === undefined || k.batch !== batch) return false
  const set = v4 ? batch.v4 : batch.v6
  if (set.timeouts[k.index]! < timeout) set.timeouts[k.index] = timeout
  if (k.expiresAt < expiresAt) k.expiresAt = expiresAt
  return true
}

/** Appends an element to the batch's set of its family; returns its index there. */
function queueElement(batch: Batch, v4: boolean, key: string, timeout: number): number {
  const set = v4 ? batch.v4 : batch.v6
  set.keys.push(key)
  set.timeouts.push(timeout)
  return set.keys.length - 1
}
