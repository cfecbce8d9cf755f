import { LRUCache } from 'lru-cache'
import { HEADER_LEN, type AnswerAddress, type AnswerScan, type QueryInfo } from './wire.js'

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
  /**
   * Why an HTTPS/SVCB record of this answer could not be read by `dns.ech: strip`
   * (svcb-ech.ts); set only in strip mode. Such an answer is served as SERVFAIL, never relayed.
   */
  readonly svcbMalformed?: string
  /** CNAME/DNAME targets of the question's name, in chain order, as lowercase wire names (cname-chain.ts). */
  readonly aliases?: readonly Buffer[]
  /** A/AAAA after CNAMEs; computed when first needed (sink, lookup), then kept. */
  addresses: readonly AnswerAddress[] | null
}

/**
 * Fixed cost charged per entry besides its packed bytes and its key: the StoredAnswer
 * object, its ArrayBuffer and three views on it, the key string's header and the LRU's
 * slots. Measured, not estimated: `npm run bench -- cache-memory` fills a real DnsService
 * through its UDP path and divides the growth of heapUsed + arrayBuffers after GC by the
 * entries (bench/RESULTS.md, "DNS cache memory"); charged with this overhead, the
 * accounted bytes were 1.15 × that growth at 100 000 entries and 0.94 × at 6 000 (bench/RESULTS.md).
 */
export const ENTRY_OVERHEAD = 700

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
      sizeCalculation: entryBytes,
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

/** What an entry is charged: its packed bytes (see packAnswer), its key, and the measured fixed overhead. */
export function entryBytes(v: StoredAnswer, k: string): number {
  return v.wire.buffer.byteLength + k.length + ENTRY_OVERHEAD
}

/**
 * The upstream answer without its OPT (ARCOUNT adjusted), its TTL offsets and original
 * TTLs, packed into one exact-sized ArrayBuffer with three views on it. A Buffer from
 * the pool (as stripOpt returns) pins its whole 8 KiB slab while cached, whatever else
 * the slab held; two further typed arrays cost their own objects. Measured through the
 * real path (bench/cache-memory.ts): 1 046 B per 1-record entry before, see
 * bench/RESULTS.md for after.
 */
export function packAnswer(answer: Uint8Array, scan: AnswerScan): { wire: Buffer; ttlOffsets: Uint16Array; ttls: Uint32Array } {
  const n = scan.ttlOffsets.length
  const len = scan.keptEnd
  // TTLs first: a Uint32Array view needs a 4-byte aligned offset.
  const buf = new ArrayBuffer(n * 6 + len)
  const ttls = new Uint32Array(buf, 0, n)
  const ttlOffsets = new Uint16Array(buf, n * 4, n)
  const wire = Buffer.from(buf, n * 6, len)
  wire.set(answer.subarray(0, len), 0)
  wire[10] = scan.arKept >> 8
  wire[11] = scan.arKept & 0xff
  for (let i = 0; i < n; i++) {
    const p = scan.ttlOffsets[i]!
    ttlOffsets[i] = p
    const t = ((answer[p]! << 24) | (answer[p + 1]! << 16) | (answer[p + 2]! << 8) | answer[p + 3]!) >>> 0
    // RFC 2181 §8: a TTL with the top bit set is treated as zero.
    ttls[i] = t > 0x7fffffff ? 0 : t
  }
  return { wire, ttlOffsets, ttls }
}
