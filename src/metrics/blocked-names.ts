import { Gauge, type Registry } from 'prom-client'

export type BlockProtocol = 'dns' | 'sni'

const OTHER = '_other'

/**
 * `egressd_blocked_total{protocol,name}` with a bounded number of names: a device (or
 * an attacker) that queries 100 000 random names must not create 100 000 series.
 * The `max` most recently seen names keep their own series; the least recently seen
 * one is folded into `name="_other"` when a new name needs its place. A Map keeps
 * insertion order, so delete + set moves a name to the young end in O(1).
 */
export class BlockedNames {
  private readonly recent = new Map<string, number>()
  private readonly other: Record<BlockProtocol, number> = { dns: 0, sni: 0 }

  constructor(
    registry: Registry,
    private max: number,
  ) {
    const recent = this.recent
    const other = this.other
    const gauge = new Gauge({
      name: 'egressd_blocked_total',
      help: 'Blocked DNS queries and TLS connections by protocol and name; names beyond the newest metrics.blocked_names_max are counted under "_other".',
      labelNames: ['protocol', 'name'],
      registers: [],
      collect() {
        this.reset()
        for (const [key, count] of recent) {
          const cut = key.indexOf(' ')
          this.set({ protocol: key.slice(0, cut), name: key.slice(cut + 1) }, count)
        }
        this.set({ protocol: 'dns', name: OTHER }, other.dns)
        this.set({ protocol: 'sni', name: OTHER }, other.sni)
      },
    })
    ;(gauge as unknown as { type: string }).type = 'counter'
    registry.registerMetric(gauge)
  }

  record(protocol: BlockProtocol, name: string): void {
    const key = protocol + ' ' + name
    const count = this.recent.get(key)
    if (count !== undefined) {
      this.recent.delete(key)
      this.recent.set(key, count + 1)
      return
    }
    if (this.max <= 0) {
      this.other[protocol]++
      return
    }
    if (this.recent.size >= this.max) this.evictOldest()
    this.recent.set(key, 1)
  }

  /** Applied on reload; shrinking folds the oldest names at once. */
  resize(max: number): void {
    this.max = max
    while (this.recent.size > Math.max(0, max)) this.evictOldest()
  }

  get size(): number {
    return this.recent.size
  }

  private evictOldest(): void {
    const oldest = this.recent.entries().next().value
    if (oldest === undefined) return
    const [key, count] = oldest
    this.recent.delete(key)
    this.other[key.slice(0, key.indexOf(' ')) as BlockProtocol] += count
  }
}
