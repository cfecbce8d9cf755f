import { LRUCache } from 'lru-cache'

interface Bucket {
  tokens: number
  last: number
}

/**
 * A token bucket per client address (`rateLimit.qps` refill, `rateLimit.burst`
 * capacity). The table is an LRU of at most `maxClients` buckets, so a flood from
 * spoofed sources costs bounded memory: an evicted client simply starts full again.
 */
export class RateLimiter {
  private readonly buckets: LRUCache<string, Bucket>

  constructor(
    readonly qps: number,
    readonly burst: number,
    maxClients = 65_536,
    private readonly now: () => number = Date.now,
  ) {
    this.buckets = new LRUCache<string, Bucket>({ max: maxClients })
  }

  get enabled(): boolean {
    return this.qps > 0
  }

  /** True when `client` may send one more query now. */
  take(client: string): boolean {
    const now = this.now()
    const cap = Math.max(1, this.burst)
    let b = this.buckets.get(client)
    if (b === undefined) {
      b = { tokens: cap, last: now }
      this.buckets.set(client, b)
    } else {
      b.tokens = Math.min(cap, b.tokens + ((now - b.last) * this.qps) / 1000)
      b.last = now
    }
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  get size(): number {
    return this.buckets.size
  }
}
