import type { DnsConfig } from '../config/types.js'
import { CnameBlockedError, EgressdError, MalformedAnswerError, OverloadError } from '../errors.js'
import { FairShare } from '../fair-share.js'
import { DnsCache, packAnswer, type StoredAnswer } from './cache.js'
import { EchStrip, hasServiceRecord, stripEch, STRIP_MALFORMED, STRIP_UNCHANGED } from './svcb-ech.js'
import type { Logger } from '../log/logger.js'
import type { DnsMetrics } from './metrics.js'
import { isPrivateAddress } from '../net/private-ranges.js'
import { aliasTargets, NO_ALIASES } from './cname-chain.js'
import { wireNameText } from './name-text.js'
import { UpstreamClient } from './upstream.js'
import {
  buildQuery,
  buildUpstreamQuery,
  encodeName,
  extractChain,
  parseQuery,
  PARSE_OK,
  QueryInfo,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  scanAnswer,
  TYPE_A,
  TYPE_AAAA,
  type AnswerAddress,
} from './wire.js'

export interface ResolvedAddresses {
  v4: string[]
  v6: string[]
  ttl: number
}

const MAX_CNAME_HOPS = 8
/**
 * Names whose addresses `cachedAddresses` can give without a lookup. The SNI proxy dials
 * allowlisted names, a handful per fleet; past this bound the oldest entry goes.
 */
export const MAX_ADDRESS_NAMES = 4096

/**
 * The caller's policy for alias targets (the SNI proxy: the client's group), given each
 * CNAME/DNAME target as a lowercase wire name; false refuses the whole lookup.
 */
export type AdmitTarget = (target: Uint8Array) => boolean

interface CachedAddresses {
  readonly v4: string[]
  readonly v6: string[]
  /** Every alias target met on the way, checked again on each use (the policy is the caller's). */
  readonly aliases: readonly Buffer[]
  /** When the first of the stored answers they came from expires (ms, `now` clock). */
  readonly until: number
  /** When the first of the records expires, for the TTL handed out. */
  readonly recordsUntil: number
}

/**
 * The one resolver core: cache, then upstream, with identical concurrent misses
 * sharing one upstream exchange. The DNS server answers clients from what `cached`
 * and `fetch` return; the SNI proxy calls `lookup`. Policy and rebinding are the
 * callers' business: this only resolves.
 */
export class Resolver {
  readonly cache: DnsCache
  private readonly upstream: UpstreamClient
  private readonly inflight = new Map<string, Promise<StoredAnswer>>()
  private settings: DnsConfig
  private pendingCount = 0
  /** Per-client shares of maxPendingUpstream (src/fair-share.ts): one client cannot hold it all. */
  private readonly shares: FairShare
  /** Lower-case name → what `lookup` last found for it (see cachedAddresses). Insertion order is age. */
  private readonly addressCache = new Map<string, CachedAddresses>()
  /** Scratch of `dns.ech: strip` (svcb-ech.ts), reused for every upstream answer. */
  private readonly echStrip = new EchStrip()

  constructor(
    settings: DnsConfig,
    private readonly metrics: DnsMetrics,
    readonly now: () => number = Date.now,
    /** Certificate failures of encrypted upstreams are logged here (at most once a minute each). */
    log: Logger | null = null,
  ) {
    this.settings = settings
    this.shares = new FairShare(settings.maxPendingUpstream)
    this.cache = new DnsCache(settings.cache, now)
    this.upstream = new UpstreamClient(settings.upstreams, settings.upstreamTimeoutMs, metrics, log, settings.upstreamCaFile)
  }

  /** Reload: new upstreams, timeouts, TTL bounds and cache limits; flights in progress finish as they were. */
  configure(settings: DnsConfig): void {
    this.settings = settings
    this.shares.budget = settings.maxPendingUpstream
    this.upstream.configure(settings.upstreams, settings.upstreamTimeoutMs, settings.upstreamCaFile)
    this.cache.resize(settings.cache)
    // New TTL bounds apply to what comes next; nothing is kept past the answers it came from.
    this.addressCache.clear()
  }

  /**
   * The addresses `lookup` found for `name`, while every stored answer they came from is
   * still fresh in the cache's terms (its TTL bounds applied), or undefined. Synchronous:
   * the SNI proxy's lookup on a cache hit (two queries built, parsed, keyed and
   * looked up, two answers walked, and a promise per step) took ~86 µs per connection at
   * the median on the loaded VM, about a tenth of the latency egressd adds to a new
   * connection (bench/RESULTS.md, SNI section).
   */
  cachedAddresses(name: string, admit?: AdmitTarget): ResolvedAddresses | undefined {
    const key = name.toLowerCase()
    const hit = this.addressCache.get(key)
    if (hit === undefined) return undefined
    const now = this.now()
    if (now >= hit.until) {
      this.addressCache.delete(key)
      return undefined
    }
    // A refused target: let `lookup` say so (it throws CnameBlockedError).
    if (this.checksAliases(admit) && hit.aliases.some((t) => !admit(t))) return undefined
    return { v4: hit.v4, v6: hit.v6, ttl: Math.max(0, Math.floor((hit.recordsUntil - now) / 1000)) }
  }

  /** Stop: ends upstream tries in progress (their flights reject) and refuses new ones. */
  close(): void {
    this.upstream.close()
  }

  /**
   * The upstream answer without `ech` params (svcb-ech.ts), packed for the cache and
   * counted; null when it had none; the reason when an HTTPS/SVCB record is malformed.
   */
  private withoutEch(answer: Buffer): ReturnType<typeof packAnswer> | null | string {
    const r = this.echStrip
    const res = stripEch(answer, answer.length, r)
    if (res === STRIP_MALFORMED) return r.reason
    if (res === STRIP_UNCHANGED) return null
    const out = r.out!
    // The rewrite keeps every name and length valid (its tests check it with this scan),
    // so this cannot fail; the check keeps a broken rewrite from ever being relayed.
    const rescan = scanAnswer(out, out.length)
    if (rescan === null) return 'the rewritten answer did not scan'
    const m = this.metrics
    if (r.params > 0) m.echStripped.incLabel('param', r.params)
    if (r.records > 0) m.echStripped.incLabel('record', r.records)
    if (r.signatures > 0) m.echStripped.incLabel('rrsig', r.signatures)
    return packAnswer(out, rescan)
  }

  /** Open connections to DNS over TLS / HTTPS upstreams. */
  get upstreamConnections(): number {
    return this.upstream.secureConnections
  }

  get pending(): number {
    return this.pendingCount
  }

  /**
   * The stored answer for a miss: joins an identical flight in progress or starts one
   * (over TCP when the client asked over TCP). Rejects with an EgressdError:
   * EOVERLOAD when maxPendingUpstream exchanges are already outstanding, or when
   * `client` already holds its fair share of them (src/fair-share.ts; nothing sent);
   * ETIMEOUT, ERESOLVE, EMALFORMED. Joining a flight in progress costs no share.
   * Without `client` (the SNI proxy's lookups) only the global bound applies.
   */
  fetch(key: string, q: Uint8Array, info: QueryInfo, viaTcp: boolean, client?: string): Promise<StoredAnswer> {
    const flightKey = viaTcp ? key + 'T' : key
    const flying = this.inflight.get(flightKey)
    if (flying !== undefined) return flying
    if (this.pendingCount >= this.settings.maxPendingUpstream) {
      return Promise.reject(new OverloadError(`${this.pendingCount} upstream queries outstanding`))
    }
    if (client !== undefined && !this.shares.take(client)) {
      return Promise.reject(new OverloadError(`${client} holds its share (${this.shares.holding(client)}) of the upstream queries outstanding`))
    }
    const query = buildUpstreamQuery(q, info, 0)
    const questionEnd = info.questionEnd
    this.pendingCount++
    const flight = this.upstream
      .exchange(query, questionEnd, viaTcp)
      .then(({ answer, upstream }) => this.store(key, answer, upstream))
      .finally(() => {
        this.pendingCount--
        if (client !== undefined) this.shares.release(client)
        this.inflight.delete(flightKey)
      })
    this.inflight.set(flightKey, flight)
    return flight
  }

  private store(key: string, answer: Buffer, upstream: string): StoredAnswer {
    const scan = scanAnswer(answer, answer.length)
    if (scan === null) {
      this.metrics.upstreamErrors.inc(upstream, 'malformed')
      throw new MalformedAnswerError('upstream answer is malformed')
    }
    const c = this.settings.cache
    let lifetime = 0
    if (scan.rcode === RCODE_NOERROR && scan.anCount > 0) {
      lifetime = Math.min(Math.max(scan.minTtl, c.minTtl), c.maxTtl)
    } else if (scan.rcode === RCODE_NXDOMAIN || scan.rcode === RCODE_NOERROR) {
      // RFC 2308 §5: negative answers live min(SOA TTL, SOA MINIMUM); no SOA, no caching.
      lifetime = scan.negativeTtl < 0 ? 0 : Math.min(scan.negativeTtl, c.negativeMaxTtl)
    }
    let hasPrivate = false
    for (const off of scan.addressOffsets) {
      // answer[off - 1] is the low byte of RDLENGTH: 4 (A) or 16 (AAAA).
      if (isPrivateAddress(answer, off, answer[off - 1] === 16 ? 16 : 4)) hasPrivate = true
    }
    const other = scan.otherAddresses
    for (let i = 0; i < other.length; i += 2) if (isPrivateAddress(answer, other[i]!, other[i + 1] === 16 ? 16 : 4)) hasPrivate = true
    let aliases: readonly Buffer[] = NO_ALIASES
    if (scan.hasAlias) {
      const chain = aliasTargets(answer, answer.length)
      if (chain === null) {
        this.metrics.upstreamErrors.inc(upstream, 'malformed')
        throw new MalformedAnswerError('upstream answer has a malformed alias chain')
      }
      aliases = chain
    }
    let packed = packAnswer(answer, scan)
    let svcbMalformed: string | undefined
    // `dns.ech: strip`, once per upstream answer, before it is cached: hits and the
    // queries that joined this flight serve the stripped copy as it is. `hasPrivate`
    // stays the raw answer's: a removed record's hint may have set it, and staying
    // SERVFAIL then errs on the safe side.
    if (this.settings.ech === 'strip' && hasServiceRecord(packed.wire, packed.ttlOffsets)) {
      const stripped = this.withoutEch(answer)
      if (typeof stripped === 'string') svcbMalformed = stripped
      else if (stripped !== null) packed = stripped
    }
    const entry: StoredAnswer = {
      aliases,
      wire: packed.wire,
      ttlOffsets: packed.ttlOffsets,
      ttls: packed.ttls,
      rcode: scan.rcode,
      storedAt: this.now(),
      lifetime,
      hasPrivate,
      svcbMalformed,
      addresses: null,
    }
    this.cache.set(key, entry)
    return entry
  }

  /** A/AAAA after CNAMEs of a stored answer, with TTLs as stored (not aged); computed once. */
  static addressesOf(entry: StoredAnswer): readonly AnswerAddress[] {
    if (entry.addresses === null) entry.addresses = extractChain(entry.wire, entry.wire.length, MAX_CNAME_HOPS)?.addresses ?? []
    return entry.addresses
  }

  /**
   * A and AAAA of `name` through the same cache and upstreams, CNAME chains followed
   * inside answers and re-queried when a chain ends without addresses (at most 8 hops).
   * No rebinding check: the SNI proxy applies its own private-destination rule.
   */
  async lookup(name: string, admit?: AdmitTarget): Promise<ResolvedAddresses> {
    const check = this.checksAliases(admit)
    const met: Buffer[] = []
    const key = name.toLowerCase()
    let wireName = encodeName(key)
    if (wireName === null) throw new EgressdError('EBADNAME', `not a valid DNS name: ${JSON.stringify(name)}`)
    const seen = new Set<string>()
    let until = Number.MAX_SAFE_INTEGER
    for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
      const [a, aaaa] = await Promise.allSettled([this.resolveType(wireName, TYPE_A), this.resolveType(wireName, TYPE_AAAA)])
      if (a.status === 'rejected' && aaaa.status === 'rejected') throw a.reason
      const out: ResolvedAddresses = { v4: [], v6: [], ttl: Number.MAX_SAFE_INTEGER }
      let nxdomain = false
      let target: string | null = null
      for (const [family, r] of [[4, a], [6, aaaa]] as const) {
        if (r.status !== 'fulfilled') continue
        const { entry, elapsed } = r.value
        until = Math.min(until, entry.storedAt + entry.lifetime * 1000)
        if (entry.rcode === RCODE_NXDOMAIN) nxdomain = true
        for (const t of entry.aliases ?? []) {
          // Checked before any address of the answer is used, and before a target is re-queried.
          if (check && !admit!(t)) throw new CnameBlockedError(name, wireNameText(t))
          met.push(t)
        }
        const chain = extractChain(entry.wire, entry.wire.length, MAX_CNAME_HOPS)
        if (chain === null) continue
        for (const addr of chain.addresses) {
          if (addr.family !== family) continue // only what was asked: A from the A answer, AAAA from the AAAA one
          ;(family === 4 ? out.v4 : out.v6).push(addr.address)
          out.ttl = Math.min(out.ttl, Math.max(0, addr.ttl - elapsed))
        }
        target ??= chain.target
      }
      if (out.v4.length + out.v6.length > 0) {
        this.rememberAddresses(key, out, until, met)
        return out
      }
      if (nxdomain) throw new EgressdError('ENXDOMAIN', `${name}: no such name`)
      const current = wireName
      const next = target === null ? null : encodeName(target)
      if (next === null || next.equals(current) || seen.has(target!)) break
      seen.add(target!)
      wireName = next
    }
    throw new EgressdError('ERESOLVE', `${name}: no A or AAAA records`)
  }

  /** Alias targets go through `admit` unless `dns.cname_targets: allow_any` (or no `admit` was given). */
  private checksAliases(admit: AdmitTarget | undefined): admit is AdmitTarget {
    return admit !== undefined && this.settings.cnameTargets !== 'allow_any'
  }

  private rememberAddresses(key: string, out: ResolvedAddresses, until: number, aliases: readonly Buffer[]): void {
    const now = this.now()
    // An answer the cache did not keep (lifetime 0) is not kept here either.
    if (until <= now) return
    this.addressCache.delete(key)
    if (this.addressCache.size >= MAX_ADDRESS_NAMES) this.addressCache.delete(this.addressCache.keys().next().value!)
    this.addressCache.set(key, { v4: out.v4, v6: out.v6, aliases, until, recordsUntil: now + out.ttl * 1000 })
  }

  private async resolveType(name: Buffer, type: number): Promise<{ entry: StoredAnswer; elapsed: number }> {
    const q = buildQuery(name, type, 0)
    const info = new QueryInfo()
    if (parseQuery(q, q.length, info) !== PARSE_OK) throw new EgressdError('EBADNAME', 'cannot build a query for this name')
    const key = this.cache.key(q, info)
    let entry = this.cache.get(key)
    if (entry !== undefined) this.metrics.cacheHits.inc(0)
    else {
      this.metrics.cacheMisses.inc(0)
      entry = await this.fetch(key, q, info, false)
    }
    return { entry, elapsed: Math.floor((this.now() - entry.storedAt) / 1000) }
  }
}
