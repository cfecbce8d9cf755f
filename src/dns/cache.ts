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
  /** An A/AAAA in the answer section is a private address (rebinding check at serve time). */
  readonly hasPrivate: boolean
  /** A/AAAA after CNAMEs; computed when first needed (sink, lookup), then kept. */
  addresses: readonly AnswerAddress[] | null
}

/** Fixed cost charged per entry besides its bytes: the object, its key and the LRU node. */
const ENTRY_OVERHEAD = 256

/**
 * The largest `dns.cache.max_entries` the loader accepts. The LRU is created without a
 * preallocated entry count (lru-cache's `max` preallocates two arrays and two typed
 * arrays of that length: 100 000 000 took ~2.4 GB and exhausted the heap), so this bound
 * costs nothing until entries exist; `max_bytes` is what bounds memory.
 */
export const MAX_ENTRIES_LIMIT = 100_000_000

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
    // No `max`: the entry count is enforced in `set`, so nothing is preallocated.
    return new LRUCache<string, StoredAnswer>({
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
    if (entry.lifetime <= 0) return
    if (this.lru.size >= Math.max(1, this.limits.maxEntries) && !this.lru.has(key)) this.lru.pop()
    this.lru.set(key, entry)
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
