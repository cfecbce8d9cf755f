/**
 * The page's traffic charts: every `intervalMs` (5 s) the cumulative counters are read
 * from the metrics registry and the differences since the last reading become one
 * sample of rates; the newest `capacity` samples (180: 15 minutes) are kept. Reading
 * eleven series through prom-client's `get()` costs well under a millisecond, so the
 * sampler runs whether or not a page is open (15 minutes of history are there when one
 * opens). `rates` is the pure core; `readRegistry` the adapter.
 */
import type { Registry } from 'prom-client'

export const SAMPLE_INTERVAL_MS = 5_000
export const SAMPLES_KEPT = 180

/** Cumulative counts (and two gauges) at one instant. */
export interface Reading {
  readonly time: number
  readonly dnsAllowed: number
  readonly dnsBlocked: number
  readonly dnsWouldBlock: number
  readonly cacheHits: number
  readonly cacheMisses: number
  /** Successful upstream exchanges by transport: how many, and their summed seconds. */
  readonly upstream: Readonly<Record<string, { readonly count: number; readonly sum: number }>>
  /** Failed upstream tries by reason. */
  readonly upstreamErrors: Readonly<Record<string, number>>
  /** Per upstream (the `upstream` label, as configured): successful exchanges, their summed seconds, failed tries. */
  readonly byUpstream?: Readonly<Record<string, UpstreamReading>>
  readonly sniAllowed: number
  /** Blocked, malformed and timed-out hellos: every connection refused. */
  readonly sniBlocked: number
  readonly sniWouldBlock: number
  readonly sniActive: number
  readonly cacheEntries: number
}

export interface UpstreamReading {
  readonly transport: string
  readonly count: number
  readonly sum: number
  readonly errors: number
}

/** One upstream over one interval: mean exchange time (ms, null without one) and failed tries per second. */
export interface UpstreamRates {
  readonly transport: string
  readonly ms: number | null
  readonly errors: number
}

/** Rates over one interval; ratios and latencies are null when nothing happened. */
export interface Sample {
  readonly t: number
  readonly dnsAllowed: number
  readonly dnsBlocked: number
  readonly dnsWouldBlock: number
  readonly cacheHitRatio: number | null
  /** Mean upstream exchange time in ms over the interval, per transport. */
  readonly upstreamMs: Readonly<Record<string, number | null>>
  /** Failed upstream tries per second, per reason (reasons with none left out). */
  readonly upstreamErrors: Readonly<Record<string, number>>
  /** Per configured upstream; bounded by `dns.upstreams`. */
  readonly upstreams: Readonly<Record<string, UpstreamRates>>
  readonly sniAllowed: number
  readonly sniBlocked: number
  readonly sniWouldBlock: number
  readonly sniActive: number
  readonly cacheEntries: number
}

/** One sample from two readings. Counters that went down (a restart of the source) count from 0. */
export function rates(a: Reading, b: Reading): Sample {
  const s = Math.max(b.time - a.time, 1) / 1000
  const d = (x: number, y: number): number => (y >= x ? y - x : y)
  const r = (x: number, y: number): number => round(d(x, y) / s)
  const hits = d(a.cacheHits, b.cacheHits)
  const misses = d(a.cacheMisses, b.cacheMisses)
  const upstreamMs: Record<string, number | null> = {}
  for (const [transport, now] of Object.entries(b.upstream)) {
    const before = a.upstream[transport] ?? { count: 0, sum: 0 }
    const n = d(before.count, now.count)
    upstreamMs[transport] = n === 0 ? null : round((d(before.sum, now.sum) / n) * 1000)
  }
  const upstreamErrors: Record<string, number> = {}
  for (const [reason, now] of Object.entries(b.upstreamErrors)) {
    const v = r(a.upstreamErrors[reason] ?? 0, now)
    if (v > 0) upstreamErrors[reason] = v
  }
  const upstreams: Record<string, UpstreamRates> = {}
  for (const [label, now] of Object.entries(b.byUpstream ?? {})) {
    const before = a.byUpstream?.[label] ?? { count: 0, sum: 0, errors: 0 }
    const n = d(before.count, now.count)
    upstreams[label] = { transport: now.transport, ms: n === 0 ? null : round((d(before.sum, now.sum) / n) * 1000), errors: r(before.errors, now.errors) }
  }
  return {
    t: b.time,
    dnsAllowed: r(a.dnsAllowed, b.dnsAllowed),
    dnsBlocked: r(a.dnsBlocked, b.dnsBlocked),
    dnsWouldBlock: r(a.dnsWouldBlock, b.dnsWouldBlock),
    cacheHitRatio: hits + misses === 0 ? null : round(hits / (hits + misses)),
    upstreamMs,
    upstreamErrors,
    upstreams,
    sniAllowed: r(a.sniAllowed, b.sniAllowed),
    sniBlocked: r(a.sniBlocked, b.sniBlocked),
    sniWouldBlock: r(a.sniWouldBlock, b.sniWouldBlock),
    sniActive: b.sniActive,
    cacheEntries: b.cacheEntries,
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000
}

/** A bounded list of samples; `add` drops the oldest beyond `capacity`. */
export class SampleRing {
  private readonly samples: Sample[] = []

  constructor(readonly capacity = SAMPLES_KEPT) {}

  add(s: Sample): void {
    this.samples.push(s)
    if (this.samples.length > this.capacity) this.samples.shift()
  }

  all(): readonly Sample[] {
    return this.samples
  }

  get latest(): Sample | null {
    return this.samples[this.samples.length - 1] ?? null
  }
}

type Values = { value: number; labels: Record<string, string | number>; metricName?: string }[]

/** The series a Reading needs, read from `registry`; series that are absent read as 0. */
export async function readRegistry(registry: Registry, time: number): Promise<Reading> {
  const values = async (name: string): Promise<Values> => {
    const m = registry.getSingleMetric(name)
    return m === undefined ? [] : ((await m.get()).values as Values)
  }
  const [dns, hits, misses, duration, errors, sni, active, entries] = await Promise.all([
    values('egressd_dns_queries_total'),
    values('egressd_dns_cache_hits_total'),
    values('egressd_dns_cache_misses_total'),
    values('egressd_dns_upstream_duration_seconds'),
    values('egressd_dns_upstream_errors_total'),
    values('egressd_sni_connections_total'),
    values('egressd_sni_active_connections'),
    values('egressd_dns_cache_entries'),
  ])
  const by = (vs: Values, label: string, value: string): number => vs.find((v) => v.labels[label] === value)?.value ?? 0
  const sum = (vs: Values): number => vs.reduce((n, v) => n + v.value, 0)
  // Summed over upstreams per transport, and per upstream (label as configured).
  const upstream: Record<string, { count: number; sum: number }> = {}
  const byUpstream: Record<string, { transport: string; count: number; sum: number; errors: number }> = {}
  for (const v of duration) {
    const transport = String(v.labels.transport ?? '')
    const u = (upstream[transport] ??= { count: 0, sum: 0 })
    const label = v.labels.upstream === undefined ? null : String(v.labels.upstream)
    const p = label === null ? null : (byUpstream[label] ??= { transport, count: 0, sum: 0, errors: 0 })
    if (v.metricName?.endsWith('_count')) {
      u.count += v.value
      if (p !== null) p.count += v.value
    } else if (v.metricName?.endsWith('_sum')) {
      u.sum += v.value
      if (p !== null) p.sum += v.value
    }
  }
  const upstreamErrors: Record<string, number> = {}
  for (const v of errors) {
    const reason = String(v.labels.reason)
    upstreamErrors[reason] = (upstreamErrors[reason] ?? 0) + v.value
    if (v.labels.upstream === undefined) continue
    const label = String(v.labels.upstream)
    // An upstream that has only failed so far: its transport from how it is written.
    const p = (byUpstream[label] ??= { transport: transportOf(label), count: 0, sum: 0, errors: 0 })
    p.errors += v.value
  }
  return {
    time,
    dnsAllowed: by(dns, 'verdict', 'allowed'),
    dnsBlocked: by(dns, 'verdict', 'blocked'),
    dnsWouldBlock: by(dns, 'verdict', 'would_block'),
    cacheHits: sum(hits),
    cacheMisses: sum(misses),
    upstream,
    upstreamErrors,
    byUpstream,
    sniAllowed: by(sni, 'verdict', 'allowed'),
    sniBlocked: by(sni, 'verdict', 'blocked') + by(sni, 'verdict', 'malformed') + by(sni, 'verdict', 'timeout'),
    sniWouldBlock: by(sni, 'verdict', 'would_block'),
    sniActive: sum(active),
    cacheEntries: sum(entries),
  }
}

function transportOf(label: string): string {
  return label.startsWith('https://') ? 'https' : label.startsWith('tls://') || label.startsWith('tcp-tls:') ? 'tls' : 'udp'
}
