import { LRUCache } from 'lru-cache'
import { HEADER_LEN, type AnswerAddress, type QueryInfo } from './wire.js'

/** One upstream answer as stored: the bytes without the upstream OPT, plus what a hit needs. */
export interface StoredAnswer {
  readonly wire: Buffer
  /** Offsets and original values of every RR's TTL field, so a hit patches without walking names. */
  readonly ttlOffsets: Uint16Array
  readonly ttls: Uint32Array
  readonly rcode: number
  /** ms, from the cache's clock. */
  readonly storedAt: number
  /** Seconds this answer may be served; 0: not cached. */
  readonly lifetime: number
  /** An address anywhere in the answer (A/AAAA in any section, SVCB/HTTPS hints) is private (rebinding check at serve time). */
  readonly hasPrivate: boolean
  /** CNAME/DNAME targets of the question's name, in chain order, as lowercase wire names (cname-chain.ts). */
  readonly aliases?: readonly Buffer[]
  /** A/AAAA after CNAMEs; computed when first needed (sink, lookup), then kept. */
  addresses: readonly AnswerAddress[] | null
}

/** Fixed cost charged per entry besides its bytes: the object, its key and the LRU node. */
const ENTRY_OVERHEAD = 256

export interface CacheLimits {
  readonly maxEntries: number
  readonly maxBytes: number
}

/**
 * Answers keyed by (lowercased QNAME wire bytes, QTYPE, QCLASS, DO, CD). Bounded by
 * entry count and bytes (lru-cache max + maxSize). Expiry is checked on `get` against
 * an injectable clock instead of lru-cache's ttlAutopurge, which keeps one timer per
 * entry (docs/design.md, dependencies); expired entries are dropped when met or pushed out by LRU.
 */
export class DnsCache {
  private lru: LRUCache<string, StoredAnswer>
  private readonly keyScratch = Buffer.allocUnsafe(256 + 5)

  constructor(
    readonly limits: CacheLimits,
    readonly now: () => number = Date.now,
  ) {
    this.lru = DnsCache.makeLru(limits)
  }

  private static makeLru(limits: CacheLimits): LRUCache<string, StoredAnswer> {
    return new LRUCache<string, StoredAnswer>({
      max: Math.max(1, limits.maxEntries),
      maxSize: Math.max(1, limits.maxBytes),
      sizeCalculation: (v, k) => v.wire.length + k.length + ENTRY_OVERHEAD,
    })
  }

  /**
   * The key as a latin1 string of the lowercased question bytes plus one flags byte:
   * one string allocation, no UTF-8 decoding (the question is at most 255 + 4 bytes).
   */
  key(q: Uint8Array, info: QueryInfo): string {
    const s = this.keyScratch
    const end = info.questionEnd
    let n = 0
    for (let i = HEADER_LEN; i < end; i++) {
      const c = q[i]!
      s[n++] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c
    }
    s[n++] = (info.dnssecOk ? 1 : 0) | (info.checkingDisabled ? 2 : 0)
    return s.toString('latin1', 0, n)
  }

  /** A live entry, or undefined (an expired one is removed). */
  get(key: string): StoredAnswer | undefined {
    const e = this.lru.get(key)
    if (e === undefined) return undefined
    if (this.now() >= e.storedAt + e.lifetime * 1000) {
      this.lru.delete(key)
      return undefined
    }
    return e
  }

  set(key: string, entry: StoredAnswer): void {
    if (entry.lifetime > 0) this.lru.set(key, entry)
  }

  /** Applies new limits on reload; a change of limits starts an empty cache (lru-cache's are fixed). */
  resize(limits: CacheLimits): void {
    if (limits.maxEntries === this.limits.maxEntries && limits.maxBytes === this.limits.maxBytes) return
    ;(this as { limits: CacheLimits }).limits = limits
    this.lru = DnsCache.makeLru(limits)
  }

  clear(): void {
    this.lru.clear()
  }

  get size(): number {
    return this.lru.size
  }

  get bytes(): number {
    return this.lru.calculatedSize
  }
}
