import { Gauge, Histogram, type Registry } from 'prom-client'
import { FastCounter } from '../metrics/fast-counter.js'

/** would_block: a name the group's policy blocks, let through by report mode or a report entry. */
export const VERDICTS = ['allowed', 'blocked', 'refused', 'malformed', 'rate_limited', 'would_block'] as const
export type Verdict = (typeof VERDICTS)[number]

export const RCODES = ['noerror', 'formerr', 'servfail', 'nxdomain', 'notimp', 'refused', 'other'] as const

export const UPSTREAM_ERRORS = ['timeout', 'servfail', 'refused', 'rcode', 'network', 'mismatch', 'malformed', 'tcp', 'truncated'] as const
export type UpstreamError = (typeof UPSTREAM_ERRORS)[number]

/** outside_clients: a query from outside `dns.clients` over the shared REFUSED budget, malformed, or `answer: drop`. */
export const DROPS = ['short', 'response', 'rate_limited', 'send_error', 'internal_error', 'outside_clients'] as const
export const TCP_CLOSES = ['idle', 'garbage', 'limit', 'error', 'evicted'] as const

/** Live values the gauges read at scrape time. */
export interface DnsGaugeSources {
  cacheEntries(): number
  cacheBytes(): number
  pendingUpstream(): number
  tcpConnections(): number
}

/**
 * The DNS service's metrics. Per-packet counts are FastCounters (array writes,
 * published at scrape time); the histogram is observed once per upstream query,
 * where prom-client's ~300 ns is noise next to a network round trip.
 */
export class DnsMetrics {
  readonly queries: FastCounter<Verdict>
  readonly allowed: number
  readonly blocked: number
  readonly refused: number
  readonly malformed: number
  readonly rateLimited: number
  readonly wouldBlock: number
  /** Answers sent, by RCODE; slot = RCODE for 0..5, 6 for anything else. */
  readonly responses: FastCounter<(typeof RCODES)[number]>
  readonly cacheHits: FastCounter<never>
  readonly cacheMisses: FastCounter<never>
  readonly upstreamDuration: Histogram<'transport'>
  readonly upstreamErrors: FastCounter<UpstreamError>
  readonly upstreamIgnored: FastCounter<'id' | 'source' | 'question'>
  readonly dropped: FastCounter<(typeof DROPS)[number]>
  readonly rebindBlocked: FastCounter<never>
  readonly overload: FastCounter<never>
  readonly anyQueries: FastCounter<never>
  readonly sinkErrors: FastCounter<never>
  readonly tcpRejected: FastCounter<never>
  readonly tcpClosed: FastCounter<(typeof TCP_CLOSES)[number]>
  /** UDP answers cut to header + question (TC) because they exceeded the client's capped payload size. */
  readonly truncated: FastCounter<never>
  /** Allowed names answered as blocked because a CNAME/DNAME target in their answer is not allowed. */
  readonly cnameBlocked: FastCounter<never>
  /** Queries answered REFUSED or BADVERS without a decision: another class, a zone transfer, EDNS version > 0. */
  readonly protocolRefused: FastCounter<'class' | 'xfr' | 'badvers'>
  /** `dns.ech: strip` rewrites, once per upstream answer: ech params cut, records removed (mandatory=ech), RRSIGs removed. */
  readonly echStripped: FastCounter<'param' | 'record' | 'rrsig'>
  /** Answers to allowed names answered SERVFAIL because an HTTPS/SVCB record broke RFC 9460's wire rules (`dns.ech: strip`). */
  readonly svcbMalformed: FastCounter<never>

  constructor(registry: Registry, sources: DnsGaugeSources) {
    this.queries = new FastCounter(registry, 'egressd_dns_queries_total', 'DNS queries by verdict.', 'verdict', VERDICTS)
    this.allowed = this.queries.slot('allowed')
    this.blocked = this.queries.slot('blocked')
    this.refused = this.queries.slot('refused')
    this.malformed = this.queries.slot('malformed')
    this.rateLimited = this.queries.slot('rate_limited')
    this.wouldBlock = this.queries.slot('would_block')
    this.responses = new FastCounter(registry, 'egressd_dns_responses_total', 'DNS answers sent to clients by RCODE.', 'rcode', RCODES)
    this.cacheHits = new FastCounter(registry, 'egressd_dns_cache_hits_total', 'Allowed queries answered from the cache.', null, [])
    this.cacheMisses = new FastCounter(registry, 'egressd_dns_cache_misses_total', 'Allowed queries not in the cache.', null, [])
    this.upstreamDuration = new Histogram({
      name: 'egressd_dns_upstream_duration_seconds',
      help: 'Duration of successful upstream DNS exchanges.',
      labelNames: ['transport'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    })
    this.upstreamErrors = new FastCounter(registry, 'egressd_dns_upstream_errors_total', 'Failed upstream tries by reason.', 'reason', UPSTREAM_ERRORS)
    this.upstreamIgnored = new FastCounter(
      registry,
      'egressd_dns_upstream_ignored_total',
      'Datagrams ignored while waiting for an upstream answer (wrong source, ID or question: spoofing or stale).',
      'reason',
      ['id', 'source', 'question'] as const,
    )
    this.dropped = new FastCounter(registry, 'egressd_dns_dropped_total', 'Datagrams not answered, by reason.', 'reason', DROPS)
    this.rebindBlocked = new FastCounter(registry, 'egressd_dns_rebind_blocked_total', 'Allowed names whose answer held a private address (answered SERVFAIL).', null, [])
    this.overload = new FastCounter(registry, 'egressd_dns_overload_total', 'Queries answered SERVFAIL because maxPendingUpstream queries were outstanding.', null, [])
    this.anyQueries = new FastCounter(registry, 'egressd_dns_any_queries_total', 'ANY queries answered with the RFC 8482 HINFO.', null, [])
    this.sinkErrors = new FastCounter(registry, 'egressd_dns_sink_errors_total', 'Firewall sink calls that failed (the answer was sent anyway).', null, [])
    this.tcpRejected = new FastCounter(registry, 'egressd_dns_tcp_rejected_total', 'TCP connections closed at accept: maxTcpConnections reached.', null, [])
    this.tcpClosed = new FastCounter(registry, 'egressd_dns_tcp_closed_total', 'TCP connections closed by egressd, by reason.', 'reason', TCP_CLOSES)
    this.truncated = new FastCounter(
      registry,
      'egressd_dns_truncated_total',
      'UDP answers sent with TC: larger than the client\'s EDNS size, itself capped at dns.max_udp_payload.',
      null,
      [],
    )
    this.cnameBlocked = new FastCounter(
      registry,
      'egressd_dns_cname_blocked_total',
      'Allowed names answered as blocked: a CNAME/DNAME target in the answer is not allowed (dns.cname_targets: follow_policy).',
      null,
      [],
    )
    this.protocolRefused = new FastCounter(
      registry,
      'egressd_dns_protocol_refused_total',
      'Queries never forwarded: class other than IN or zone transfer (REFUSED), EDNS version > 0 (BADVERS).',
      'reason',
      ['class', 'xfr', 'badvers'] as const,
    )
    this.echStripped = new FastCounter(
      registry,
      'egressd_dns_ech_stripped_total',
      'dns.ech: strip, once per upstream answer: ech params removed from HTTPS/SVCB records (param), records removed because their mandatory list names ech (record), RRSIGs removed because they covered a rewritten set (rrsig).',
      'what',
      ['param', 'record', 'rrsig'] as const,
    )
    this.svcbMalformed = new FastCounter(
      registry,
      'egressd_dns_svcb_malformed_total',
      'Answers to allowed names sent as SERVFAIL because an HTTPS/SVCB record broke RFC 9460 wire rules (dns.ech: strip).',
      null,
      [],
    )
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(read())
        },
      })
    gauge('egressd_dns_cache_entries', 'Answers in the DNS cache.', sources.cacheEntries)
    gauge('egressd_dns_cache_bytes', 'Bytes charged to the DNS cache.', sources.cacheBytes)
    gauge('egressd_dns_upstream_pending', 'Upstream queries outstanding.', sources.pendingUpstream)
    gauge('egressd_dns_tcp_connections', 'Open client TCP connections.', sources.tcpConnections)
  }

  response(rcode: number): void {
    this.responses.inc(rcode <= 5 ? rcode : 6)
  }
}
