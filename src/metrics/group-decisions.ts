import { Gauge, type Registry } from 'prom-client'
import { DECISION_PROTOCOLS } from '../log/decision.js'
import { VERDICT_NAMES as DECISION_VERDICTS } from '../policy/decide.js'

/** Indexes into DECISION_PROTOCOLS; verdicts are the policy's own codes (VERDICT_*). */
export const PROTO_DNS = 0
export const PROTO_SNI = 1

const PER_GROUP = DECISION_PROTOCOLS.length * DECISION_VERDICTS.length

/**
 * `egressd_group_decisions_total{group,protocol,verdict}`: policy decisions per client
 * group. Groups come from the configuration, so the label is bounded. Counts live in one
 * Float64Array indexed `group × 6 + protocol × 3 + verdict` (an array write per
 * decision, like FastCounter); a reload lays out a new array in the new group order
 * and carries the counts of groups that kept their name, so the series stay monotonic.
 */
export class GroupDecisions {
  private counts = new Float64Array(PER_GROUP)
  private names: readonly string[] = ['default']

  constructor(registry: Registry) {
    const self = this
    const gauge = new Gauge({
      name: 'egressd_group_decisions_total',
      help: 'Policy decisions by client group, protocol and verdict (would_block: let through by report mode or a report entry).',
      labelNames: ['group', 'protocol', 'verdict'],
      registers: [],
      collect() {
        // A group removed by a reload loses its series rather than reporting a frozen count.
        this.reset()
        const { counts, names } = self
        for (let g = 0; g < names.length; g++) {
          for (let p = 0; p < DECISION_PROTOCOLS.length; p++) {
            for (let v = 0; v < DECISION_VERDICTS.length; v++) {
              this.set({ group: names[g]!, protocol: DECISION_PROTOCOLS[p]!, verdict: DECISION_VERDICTS[v]! }, counts[g * PER_GROUP + p * DECISION_VERDICTS.length + v]!)
            }
          }
        }
      },
    })
    ;(gauge as unknown as { type: string }).type = 'counter'
    registry.registerMetric(gauge)
  }

  /** Group names in GroupSet order (`default` last); call before the new set serves traffic. */
  configure(names: readonly string[]): void {
    const next = new Float64Array(names.length * PER_GROUP)
    names.forEach((name, g) => {
      const old = this.names.indexOf(name)
      if (old >= 0) next.set(this.counts.subarray(old * PER_GROUP, (old + 1) * PER_GROUP), g * PER_GROUP)
    })
    this.counts = next
    this.names = [...names]
  }

  inc(group: number, protocol: number, verdict: number): void {
    this.counts[group * PER_GROUP + protocol * 3 + verdict]! += 1
  }

  get(group: string, protocol: (typeof DECISION_PROTOCOLS)[number], verdict: (typeof DECISION_VERDICTS)[number]): number {
    const g = this.names.indexOf(group)
    return g < 0 ? 0 : this.counts[g * PER_GROUP + DECISION_PROTOCOLS.indexOf(protocol) * DECISION_VERDICTS.length + DECISION_VERDICTS.indexOf(verdict)]!
  }
}
