import { Gauge, type Registry } from 'prom-client'

export type BlockProtocol = 'dns' | 'sni'

const OTHER = '_other'

/**
 * `egressd_blocked_total{protocol,name}` with a bounded number of names per protocol:
 * a device (or an attacker) that queries 100 000 random names must not create 100 000
 * series. Per protocol so the key is the name itself: a `protocol + ' ' + name` key is
 * a fresh cons string to flatten and hash on every record, which measured about half
 * the cost of a record (bench/blocked-names.ts).
 */
export class BlockedNames {
  private readonly protocols: Record<BlockProtocol, Generations>
  /**
   * `egressd_client_blocked_total{protocol,client}`: the same bound for devices, so an
   * alert can say which device tried (`metrics.blocked_clients_max`); a spoofing flood
   * from many sources folds into client="_other" like names do.
   */
  private readonly clients: Record<BlockProtocol, Generations>

  constructor(registry: Registry, max: number, maxClients = 256) {
    const protocols = (this.protocols = { dns: new Generations(max), sni: new Generations(max) })
    const clients = (this.clients = { dns: new Generations(maxClients), sni: new Generations(maxClients) })
    registry.registerMetric(generationsCounter('egressd_client_blocked_total', 'Blocked DNS queries and TLS connections by protocol and client address; per protocol, clients not seen lately beyond metrics.blocked_clients_max are counted under "_other".', 'client', clients))
    registry.registerMetric(generationsCounter('egressd_blocked_total', 'Blocked DNS queries and TLS connections by protocol and name; per protocol, names not seen lately beyond metrics.blocked_names_max are counted under "_other".', 'name', protocols))
  }

  /** `client` is the device's address as its socket reported it ('' when the socket had gone). */
  record(protocol: BlockProtocol, name: string, client: string): void {
    this.protocols[protocol].record(name)
    this.clients[protocol].record(client === '' ? '_unknown' : client)
  }

  /** Applied on reload; shrinking folds the oldest names (and clients) at once. */
  resize(max: number, maxClients = 256): void {
    this.protocols.dns.resize(max)
    this.protocols.sni.resize(max)
    this.clients.dns.resize(maxClients)
    this.clients.sni.resize(maxClients)
  }

  get size(): number {
    return this.protocols.dns.size + this.protocols.sni.size
  }
}

/**
 * A counter with one series per key kept in `generations` (per protocol), computed at
 * scrape time; prom-client has no counter with `collect`, so it is a Gauge typed counter.
 */
function generationsCounter(name: string, help: string, label: 'name' | 'client', generations: Record<BlockProtocol, Generations>): Gauge {
  const gauge = new Gauge({
    name,
    help,
    labelNames: ['protocol', label],
    registers: [],
    collect() {
      this.reset()
      for (const protocol of ['dns', 'sni'] as const) {
        const g = generations[protocol]
        for (const generation of [g.old, g.young]) {
          for (const [key, n] of generation) this.set({ protocol, [label]: key }, n)
        }
        this.set({ protocol, [label]: OTHER }, g.other)
      }
    },
  })
  ;(gauge as unknown as { type: string }).type = 'counter'
  return gauge
}

/**
 * Two generations instead of a strict LRU: names seen lately live in `young`; when
 * `young` holds max/2 names, everything in `old` (not seen for a whole generation) is
 * folded into `other` and `young` becomes `old`. A name seen while in `old` moves back
 * to `young`. So at most `max` names keep series, the least recently seen go first,
 * and a record is one or two Map operations. Measured at 10 000 names, each record
 * evicting (bench/blocked-names.ts): a Map reordered by delete + set and evicted
 * through `entries().next()` cost ~11 µs a record, because that walks the deleted
 * slots at the front of V8's ordered hash table every time.
 */
class Generations {
  young = new Map<string, number>()
  old = new Map<string, number>()
  other = 0

  constructor(private max: number) {}

  get size(): number {
    return this.young.size + this.old.size
  }

  record(name: string): void {
    if (this.max <= 0) {
      this.other++
      return
    }
    const young = this.young.get(name)
    if (young !== undefined) {
      this.young.set(name, young + 1)
      return
    }
    const old = this.old.get(name)
    if (old !== undefined) this.old.delete(name)
    this.young.set(name, (old ?? 0) + 1)
    if (this.young.size >= Math.max(1, this.max >> 1)) this.nextGeneration()
  }

  resize(max: number): void {
    this.max = max
    while (this.size > Math.max(0, max)) {
      if (this.old.size === 0) this.nextGeneration()
      else this.fold(this.old)
    }
  }

  private nextGeneration(): void {
    this.fold(this.old)
    this.old = this.young
    this.young = new Map()
  }

  private fold(generation: Map<string, number>): void {
    for (const n of generation.values()) this.other += n
    generation.clear()
  }
}
