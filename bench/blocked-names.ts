/**
 * `npm run bench -- blocked-names`: cost of one BlockedNames.record() on a flood of
 * distinct names (every record evicts), against the two strict LRUs it replaced (a
 * Map reordered by delete + set, then lru-cache), and a hit-only run. Correctness inside the loop: the series total must equal the
 * number of records.
 */
import { LRUCache } from 'lru-cache'
import { Registry } from 'prom-client'
import { BlockedNames } from '../src/metrics/blocked-names.js'

/** The previous implementation: a Map reordered by delete + set, evicting its first entry. */
class MapLru {
  private readonly recent = new Map<string, number>()
  other = 0
  constructor(private readonly max: number) {}
  record(name: string): void {
    const count = this.recent.get(name)
    if (count !== undefined) {
      this.recent.delete(name)
      this.recent.set(name, count + 1)
      return
    }
    if (this.recent.size >= this.max) {
      const [key, n] = this.recent.entries().next().value as [string, number]
      this.recent.delete(key)
      this.other += n
    }
    this.recent.set(name, 1)
  }
  total(): number {
    let sum = this.other
    for (const n of this.recent.values()) sum += n
    return sum
  }
}

/** The second implementation: lru-cache with a dispose hook folding evicted counts. */
class LruCacheNames {
  private readonly cache: LRUCache<string, { n: number }>
  other = 0
  constructor(max: number) {
    this.cache = new LRUCache({ max, dispose: (c, _k, reason) => { if (reason === 'evict') this.other += c.n } })
  }
  record(name: string): void {
    const c = this.cache.get(name)
    if (c !== undefined) c.n++
    else this.cache.set(name, { n: 1 })
  }
  total(): number {
    let sum = this.other
    for (const c of this.cache.values()) sum += c.n
    return sum
  }
}

function time(label: string, records: number, fn: () => void): number {
  const start = process.hrtime.bigint()
  fn()
  const ns = Number(process.hrtime.bigint() - start) / records
  return ns
}

export async function run(args: string[]): Promise<void> {
  const records = args.includes('--quick') ? 200_000 : 1_000_000
  const names = Array.from({ length: records }, (_, i) => `n${i}.flood.example`)
  const rows: Record<string, unknown>[] = []
  for (const cap of [1000, 10_000]) {
    const map = new MapLru(cap)
    const mapNs = time('map', records, () => {
      for (let i = 0; i < records; i++) map.record(names[i]!)
    })
    if (map.total() !== records) throw new Error('map LRU lost counts')

    const registry = new Registry()
    const current = new BlockedNames(registry, cap)
    const lruNs = time('lru', records, () => {
      for (let i = 0; i < records; i++) current.record('dns', names[i]!, '192.0.2.7')
    })
    const text = await registry.metrics()
    const total = text.split('\n').filter((l) => l.startsWith('egressd_blocked_total{')).reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
    if (total !== records) throw new Error(`BlockedNames total ${total} != ${records}`)

    const hot = new BlockedNames(new Registry(), cap)
    const hitNs = time('hit', records, () => {
      for (let i = 0; i < records; i++) hot.record('dns', names[i % 16]!, '192.0.2.7')
    })
    const cache = new LruCacheNames(cap)
    const cacheNs = time('lru-cache', records, () => {
      for (let i = 0; i < records; i++) cache.record(names[i]!)
    })
    if (cache.total() !== records) throw new Error('lru-cache variant lost counts')
    for (const [impl, ns] of [['map-reorder (first)', mapNs], ['lru-cache (second)', cacheNs], ['two generations (current)', lruNs], ['two generations, 16 hot names', hitNs]] as const) {
      const row = { bench: 'blocked-names', cap, records, impl, ns_per_record: Math.round(ns), ratio_vs_old: +(mapNs / ns).toFixed(2) }
      rows.push(row)
      process.stdout.write(JSON.stringify(row) + '\n')
    }
  }
  process.stdout.write('\n| cap | impl | ns/record | old ÷ this |\n|---|---|---|---|\n')
  for (const r of rows) process.stdout.write(`| ${r.cap} | ${r.impl} | ${r.ns_per_record} | ${r.ratio_vs_old}× |\n`)
}
