/**
 * The SNI proxy's metrics, and only those (CoreDNS keeps one metrics.go per plugin).
 * Per-connection and per-chunk counts live in FastCounters (typed arrays published at
 * scrape time); only the connect-time histogram goes through prom-client per event,
 * once per allowed connection.
 */
import { Gauge, Histogram, type Registry } from 'prom-client'
import { FastCounter } from '../metrics/fast-counter.js'
import type { HelloReason } from './client-hello.js'

/** would_block: blocked by the client's group policy, spliced anyway by report mode or a report entry. */
export const VERDICTS = ['allowed', 'blocked', 'malformed', 'timeout', 'upstream_error', 'overload', 'would_block'] as const
export type Verdict = (typeof VERDICTS)[number]

/** Reader reasons, plus the proxy's own outcomes, in found/not-found pairs like Envoy's tls_inspector. */
export const HELLO_RESULTS = [
  'sni_found',
  'sni_not_found',
  'not_tls',
  'sslv2',
  'not_handshake',
  'not_client_hello',
  'bad_length',
  'multiple_names',
  'unknown_name_type',
  'ip_literal',
  'bad_name',
  'too_large',
  'timeout',
  'incomplete',
] as const
export type HelloOutcome = (typeof HELLO_RESULTS)[number]

export const UPSTREAM_ERRORS = [
  'resolve',
  'no_address',
  'private_destination',
  'connect_timeout',
  'refused',
  'unreachable',
  'connect_error',
] as const
export type UpstreamError = (typeof UPSTREAM_ERRORS)[number]

export function helloOutcome(reason: HelloReason): HelloOutcome {
  return reason === 'no_sni' ? 'sni_not_found' : reason
}

export class SniMetrics {
  readonly connections: FastCounter<Verdict>
  readonly hello: FastCounter<HelloOutcome>
  readonly upstreamErrors: FastCounter<UpstreamError>
  readonly bytes: FastCounter<'upstream' | 'downstream'>
  readonly connectSeconds: Histogram
  /**
   * Hellos carrying encrypted_client_hello (0xfe0d), by the verdict on their outer name,
   * besides their `sni_found` in `hello`: an ECH block is the provider's public name,
   * not a name anyone configured (`dns.ech: strip` keeps allowed names out of ECH).
   */
  readonly echHellos: FastCounter<'allowed' | 'blocked' | 'would_block'>
  /** Slots resolved once, so the splice's per-chunk count is one array write. */
  readonly upstreamSlot: number
  readonly downstreamSlot: number

  constructor(registry: Registry, active: () => number) {
    this.connections = new FastCounter(
      registry,
      'egressd_sni_connections_total',
      'TLS connections accepted by the SNI proxy, by verdict; overload = refused beyond sni.max_connections.',
      'verdict',
      VERDICTS,
    )
    this.hello = new FastCounter(
      registry,
      'egressd_sni_hello_total',
      'ClientHello reads by result: sni_found, sni_not_found, or why the hello was rejected (timeout, incomplete = closed before the hello).',
      'result',
      HELLO_RESULTS,
    )
    this.upstreamErrors = new FastCounter(
      registry,
      'egressd_sni_upstream_errors_total',
      'Allowed connections that could not reach an upstream, by reason.',
      'reason',
      UPSTREAM_ERRORS,
    )
    this.bytes = new FastCounter(
      registry,
      'egressd_sni_bytes_total',
      'Bytes spliced, counted as they pass: upstream = client to server (the ClientHello included), downstream = server to client.',
      'direction',
      ['upstream', 'downstream'],
    )
    this.echHellos = new FastCounter(
      registry,
      'egressd_sni_ech_hellos_total',
      'ClientHellos carrying encrypted_client_hello (ECH), by the verdict on their outer (public) name.',
      'verdict',
      ['allowed', 'blocked', 'would_block'] as const,
    )
    this.upstreamSlot = this.bytes.slot('upstream')
    this.downstreamSlot = this.bytes.slot('downstream')
    this.connectSeconds = new Histogram({
      name: 'egressd_sni_upstream_connect_seconds',
      help: 'Time from the verdict to a connected upstream socket, name resolution included.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    })
    new Gauge({
      name: 'egressd_sni_active_connections',
      help: 'Client connections the SNI proxy holds open, in any phase.',
      registers: [registry],
      collect() {
        this.set(active())
      },
    })
  }
}
