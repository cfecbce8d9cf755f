import { Gauge, Histogram, type Registry } from 'prom-client'
import { FastCounter } from '../metrics/fast-counter.js'

export type FirewallErrorReason = 'nft' | 'start' | 'invalid_address' | 'queue_full' | 'neighbour_read'
export type BatchResult = 'applied' | 'failed'

/** The firewall sink's metrics only: each folder keeps its own metrics.ts. */
export interface FirewallGauges {
  readonly pending: () => number
  readonly elements: () => number
  readonly devices: () => number
}

export function firewallMetrics(registry: Registry, gauges: FirewallGauges) {
  return {
    /** Elements written to the kernel in applied batches, refreshes included. */
    added: new FastCounter<'ipv4' | 'ipv6'>(
      registry,
      'egressd_firewall_elements_added_total',
      'Set elements (address . protocol . port) written to nftables in applied batches, by family; refreshes included.',
      'family',
      ['ipv4', 'ipv6'],
    ),
    /** Elements not written because the set holds them for more than half their timeout. */
    skipped: new FastCounter(
      registry,
      'egressd_firewall_elements_skipped_total',
      'Set elements not rewritten because they were written recently (remaining timeout above half).',
      null,
      [],
    ),
    batches: new FastCounter<BatchResult>(registry, 'egressd_firewall_batches_total', 'nft runs that wrote set elements, by result (applied, failed).', 'result', ['applied', 'failed']),
    errors: new FastCounter<FirewallErrorReason>(
      registry,
      'egressd_firewall_errors_total',
      'Firewall sink errors by reason: nft (a batch failed), start (the table or sets could not be created), invalid_address, queue_full (elements dropped because too many were waiting), ' +
        'neighbour_read (device_key mac: the kernel\'s neighbour table could not be read).',
      'reason',
      ['nft', 'start', 'invalid_address', 'queue_full', 'neighbour_read'],
    ),
    batchSeconds: new Histogram({
      name: 'egressd_firewall_batch_seconds',
      help: 'Time to apply one batch with nft, process start to exit; DNS answers wait this long at most once per batch.',
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    pending: new Gauge({
      name: 'egressd_firewall_pending_elements',
      help: 'Set elements queued or being written, not yet applied.',
      registers: [registry],
      collect() {
        this.set(gauges.pending())
      },
    }),
    elements: new Gauge({
      name: 'egressd_firewall_elements',
      help: 'Set elements the sink holds: per device and bounded in scope device (expired ones not yet dropped included), remembered for dedupe in scope shared.',
      registers: [registry],
      collect() {
        this.set(gauges.elements())
      },
    }),
    devices: new Gauge({
      name: 'egressd_firewall_devices',
      help: 'Scope device: devices holding at least one set element.',
      registers: [registry],
      collect() {
        this.set(gauges.devices())
      },
    }),
    /** Whether the ruleset reads the sets this sink fills: 1 yes, 0 no, -1 cannot tell (ruleset-scope.ts). */
    rulesetScope: new Gauge({
      name: 'egressd_firewall_ruleset_scope_match',
      help: 'Whether the forward chain of the egressd table jumps to the scope chain of the sets egressd fills (EGRESSD_SCOPE of config/nftables/egressd.nft): ' +
        '1 yes, 0 no (it jumps to another scope chain: devices are dropped), -1 unknown (no forward chain or no scope chain in it, nft unreadable, or not checked yet). Checked at start and after each reload.',
      registers: [registry],
    }),
    /** Scope device: live elements deleted to stay within a bound. */
    evicted: new FastCounter<'device' | 'total'>(
      registry,
      'egressd_firewall_evicted_total',
      'Scope device: set elements deleted before their timeout to stay within max_elements_per_device (bound="device") or max_elements (bound="total"); the answer still left.',
      'bound',
      ['device', 'total'],
    ),
    /** Scope device: answer addresses of the other family than the asking client's. */
    crossFamily: new FastCounter(
      registry,
      'egressd_firewall_cross_family_total',
      'Scope device: answer addresses not written because their family differs from the address the device asked from (no packet can match such an element).',
      null,
      [],
    ),
    /** device_key mac: answers whose client has no neighbour entry (not on-link). */
    noNeighbour: new FastCounter(
      registry,
      'egressd_firewall_no_neighbour_total',
      'Scope device with device_key mac: answers whose client address has no entry in the kernel\'s neighbour table (the device is not on-link with the gateway); nothing written, the answer still left.',
      null,
      [],
    ),
    /** device_key mac: reads of the kernel's neighbour tables (/proc/net/arp, ip -6 neigh). */
    neighbourReads: new FastCounter<'ipv4' | 'ipv6'>(
      registry,
      'egressd_firewall_neighbour_reads_total',
      'Scope device with device_key mac: reads of the kernel\'s neighbour table, by family (IPv4: /proc/net/arp; IPv6: one ip -6 neigh run).',
      'family',
      ['ipv4', 'ipv6'],
    ),
  }
}

export type FirewallMetrics = ReturnType<typeof firewallMetrics>
