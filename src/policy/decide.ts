/**
 * The one allow/block decision, used by the DNS handler (wire bytes), the SNI proxy
 * (the hello's name as text) and `egressd check`:
 *
 *   client address ─▶ group ─▶ match (text or wire) ─▶ report pass-through ─▶ verdict
 *                                                                 └─ blocked: answer (NXDOMAIN, NODATA, REFUSED)
 *
 * Pure: no sockets, logging or metrics; callers count and log what `Decision` says.
 * The hot path fills a caller-owned Decision and reads the trie's arrays only
 * (`verdictWire`); a Rule is fetched by index (`ruleOf`), never read, until a caller
 * explains the verdict.
 */
import type { CompiledGroup, GroupSet } from './groups.js'
import type { Rule } from './types.js'

export const VERDICT_ALLOWED = 0
export const VERDICT_BLOCKED = 1
/** Let through by the group's report mode or a report entry: enforce would have blocked it. */
export const VERDICT_WOULD_BLOCK = 2
export type VerdictCode = typeof VERDICT_ALLOWED | typeof VERDICT_BLOCKED | typeof VERDICT_WOULD_BLOCK
export const VERDICT_NAMES = ['allowed', 'blocked', 'would_block'] as const

/** How DNS answers a blocked name; the SNI proxy resets whatever it says. */
export type BlockAnswer = 'nxdomain' | 'nodata' | 'refused'
/** `dns.block_response`: what a blocked name gets when nothing is allowed below it… or always, with `refused`. */
export type BlockResponse = 'nxdomain' | 'refused'

/** Why a name was not allowed: no rule matched it, or a deny rule did. */
export type BlockReason = 'not_allowed' | 'denied'

/** One decision, filled in place by `Decider`; reuse one per caller on hot paths. */
export class Decision {
  verdict: VerdictCode = VERDICT_BLOCKED
  group!: CompiledGroup
  /** The deciding rule of the group's policy: the allow rule, the deny rule, or null when no rule matched. */
  rule: Rule | null = null
  /** What lets the name through: `rule` when allowed, the report rule when would_block, null when blocked. */
  passedBy: Rule | null = null
  /** How DNS answers a blocked name (meaningful only when `verdict` is blocked). */
  answer: BlockAnswer = 'nxdomain'

  get reason(): BlockReason | null {
    return this.verdict === VERDICT_ALLOWED ? null : this.rule === null ? 'not_allowed' : 'denied'
  }

  get verdictName(): (typeof VERDICT_NAMES)[number] {
    return VERDICT_NAMES[this.verdict]
  }
}

export interface DeciderOptions {
  readonly blockResponse: BlockResponse
}

export class Decider {
  constructor(
    readonly groups: GroupSet,
    readonly options: DeciderOptions = { blockResponse: 'nxdomain' },
  ) {}

  /** The client's group: one field read when no named groups exist, a memoised CIDR lookup otherwise. */
  groupOf(client: string): CompiledGroup {
    return this.groups.named ? this.groups.select(client) : this.groups.default
  }

  /** Decides a query name in DNS wire form at `offset` (the question at 12). */
  decideWire(client: string, buf: Uint8Array, offset: number, out: Decision): Decision {
    const g = this.groupOf(client)
    out.group = g
    const verdict = g.policy.verdictWire(buf, offset)
    if (verdict > 0) return allowed(out, g.policy.ruleOf(verdict)!)
    out.rule = g.policy.ruleOf(verdict)
    const passed = g.reports ? g.reportRuleWire(buf, offset) : null
    if (passed !== null) return wouldBlock(out, passed)
    out.verdict = VERDICT_BLOCKED
    out.passedBy = null
    out.answer = this.options.blockResponse === 'refused' ? 'refused' : g.policy.hasAllowedBelowWire(buf, offset) ? 'nodata' : 'nxdomain'
    return out
  }

  /** Decides a name as text (one trailing dot ignored), for the SNI proxy and `check`. */
  decideName(client: string, name: string, out: Decision): Decision {
    return this.decideNameIn(this.groupOf(client), name, out)
  }

  /** The same, in a group chosen by the caller (`check` without `--client` judges by `default`). */
  decideNameIn(g: CompiledGroup, name: string, out: Decision): Decision {
    out.group = g
    const rule = g.policy.match(name)
    if (rule !== null && rule.action === 'allow') return allowed(out, rule)
    out.rule = rule
    const passed = g.reports ? g.reportRule(name) : null
    if (passed !== null) return wouldBlock(out, passed)
    out.verdict = VERDICT_BLOCKED
    out.passedBy = null
    out.answer = this.options.blockResponse === 'refused' ? 'refused' : g.policy.hasAllowedBelow(name) ? 'nodata' : 'nxdomain'
    return out
  }

  /**
   * A name that cannot be judged at all (an SNI IP literal, a malformed name): blocked
   * in the client's group whatever its mode, since there is no name to let through.
   */
  refuseUnnamed(client: string, out: Decision): Decision {
    out.group = this.groupOf(client)
    out.verdict = VERDICT_BLOCKED
    out.rule = null
    out.passedBy = null
    out.answer = 'nxdomain'
    return out
  }
}

function allowed(out: Decision, rule: Rule): Decision {
  out.verdict = VERDICT_ALLOWED
  out.rule = rule
  out.passedBy = rule
  return out
}

function wouldBlock(out: Decision, passed: Rule): Decision {
  out.verdict = VERDICT_WOULD_BLOCK
  out.passedBy = passed
  return out
}
