import type { Config } from '../config/types.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { BlockedNames } from '../metrics/blocked-names.js'
import { PROTO_DNS, V_ALLOWED, V_BLOCKED, V_WOULD_BLOCK, type GroupDecisions } from '../metrics/group-decisions.js'
import { compilePolicy } from '../policy/compile.js'
import { GroupSet, type CompiledGroup } from '../policy/groups.js'
import type { Policy } from '../policy/match.js'
import type { Rule } from '../policy/types.js'
import type { StoredAnswer } from './cache.js'
import { ClientAcl } from './client-acl.js'
import type { DnsMetrics } from './metrics.js'
import { RateLimiter } from './rate-limiter.js'
import { Resolver } from './resolver.js'
import {
  buildAnyReply,
  buildHeaderReply,
  buildReply,
  EDE_BLOCKED,
  EDE_FILTERED,
  EDE_NO_REACHABLE_AUTHORITY,
  EDE_PROHIBITED,
  parseQuery,
  PARSE_DROP,
  PARSE_FORMERR,
  PARSE_NOTIMP,
  qnameText,
  QueryInfo,
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NOTIMP,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  RCODE_SERVFAIL,
  renderAnswer,
  TYPE_ANY,
  type AnswerAddress,
} from './wire.js'

export type AllowedAnswerSink = (
  name: string,
  rule: Rule,
  addresses: readonly { address: string; family: 4 | 6; ttl: number }[],
) => Promise<void> | void

const TEXT_BLOCKED = Buffer.from('egressd: not on allowlist')
const TEXT_REBIND = Buffer.from('egressd: private address in answer')
const TEXT_PROHIBITED = Buffer.from('egressd: client not allowed')

const TYPE_NAMES: Record<number, string> = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 13: 'HINFO', 15: 'MX', 16: 'TXT', 28: 'AAAA',
  33: 'SRV', 35: 'NAPTR', 43: 'DS', 46: 'RRSIG', 48: 'DNSKEY', 64: 'SVCB', 65: 'HTTPS', 255: 'ANY',
}

function typeName(t: number): string {
  return TYPE_NAMES[t] ?? `TYPE${t}`
}

/** Everything a reload replaces, swapped as one object so a query sees one configuration. */
class State {
  readonly acl: ClientAcl
  readonly limiter: RateLimiter | null
  readonly exempt: Policy | null
  readonly groups: GroupSet

  constructor(
    readonly config: Config,
    policy: Policy | GroupSet,
    previous: State | null,
  ) {
    this.groups = policy instanceof GroupSet ? policy : GroupSet.single(policy)
    this.acl = new ClientAcl(config.dns.clients)
    const rl = config.dns.rateLimit
    const old = previous?.limiter
    this.limiter =
      rl.qps <= 0 ? null : old && old.qps === rl.qps && old.burst === rl.burst ? old : new RateLimiter(rl.qps, rl.burst)
    this.exempt = config.dns.rebindExempt.length > 0 ? compilePolicy(config.dns.rebindExempt) : null
  }
}

/**
 * The thin link between the sockets and the resolver core: parse, client ACL, rate
 * limit, policy, then a reply built from the query's bytes (blocked, refused,
 * malformed) or from the cache/upstream (allowed). Returns the reply, null to stay
 * silent, or a promise of either for a cache miss.
 *
 * The blocked and cache-hit paths are synchronous and touch no promise: the blocked
 * path matches the wire bytes (`matchWire`) and decodes the name once, for the
 * `blocked_total` label the interface requires; the hit path is an LRU get with a
 * latin1 key, one Buffer copy and an ID/TTL patch.
 */
export class QueryHandler {
  private state: State
  /** Reused by every synchronous step; a cache miss copies what it keeps. */
  private readonly info = new QueryInfo()
  private readonly nameScratch = Buffer.allocUnsafe(256)
  private readonly blockLog = new LogLimiter(100)
  private readonly eventLog = new LogLimiter(20)
  private rateToggle = 0

  constructor(
    config: Config,
    policy: Policy | GroupSet,
    readonly resolver: Resolver,
    private readonly metrics: DnsMetrics,
    private readonly log: Logger,
    private readonly blocked: BlockedNames,
    private readonly sink: AllowedAnswerSink | undefined,
    private readonly decisions: GroupDecisions | null = null,
  ) {
    this.state = new State(config, policy, null)
  }

  update(config: Config, policy: Policy | GroupSet): void {
    this.state = new State(config, policy, this.state)
  }

  /** Lines the per-event limiters held back since the last call (the daemon may log the sum). */
  takeSuppressed(): number {
    return this.blockLog.takeSuppressed() + this.eventLog.takeSuppressed()
  }

  handle(q: Buffer, client: string, viaTcp: boolean): Buffer | null | Promise<Buffer | null> {
    const m = this.metrics
    const info = this.info
    const st = this.state
    const parsed = parseQuery(q, q.length, info)
    if (parsed === PARSE_DROP) {
      m.queries.inc(m.malformed)
      m.dropped.incLabel(q.length < 12 ? 'short' : 'response')
      return null
    }
    if (!st.acl.allows(client)) {
      m.queries.inc(m.refused)
      if (parsed !== 0) return null // garbage from outside the ACL earns no answer at all
      m.response(RCODE_REFUSED)
      return buildReply(q, info, RCODE_REFUSED, EDE_PROHIBITED, TEXT_PROHIBITED)
    }
    if (parsed === PARSE_FORMERR || parsed === PARSE_NOTIMP) {
      m.queries.inc(m.malformed)
      const rcode = parsed === PARSE_NOTIMP ? RCODE_NOTIMP : RCODE_FORMERR
      m.response(rcode)
      return buildHeaderReply(q, rcode)
    }
    if (st.limiter !== null && !st.limiter.take(client)) {
      m.queries.inc(m.rateLimited)
      // Over UDP every other excess query is dropped: a spoofed flood then reflects at
      // most half its packets (and only as small REFUSED), while a real client that
      // bursts still learns why. TCP cannot be spoofed, so it always gets REFUSED.
      if (!viaTcp && (this.rateToggle ^= 1) === 1) {
        m.dropped.incLabel('rate_limited')
        return null
      }
      m.response(RCODE_REFUSED)
      return buildReply(q, info, RCODE_REFUSED, 0, null)
    }
    // Without named groups there is nothing to select: the hot path stays one field read.
    const g = st.groups.named ? st.groups.select(client) : st.groups.default
    // The verdict is read from the trie alone; the Rule object is only fetched, not read, here.
    const verdict = g.policy.verdictWire(q, 12)
    let rule: Rule
    if (verdict <= 0) {
      const denied = g.policy.ruleOf(verdict)
      const passed = g.reports ? g.reportRuleWire(q, 12) : null
      if (passed === null) return this.block(q, info, st, g, denied, client)
      this.wouldBlock(q, info, g, denied, passed, client)
      rule = passed
    } else {
      rule = g.policy.ruleOf(verdict)!
      m.queries.inc(m.allowed)
      this.decisions?.inc(g.index, PROTO_DNS, V_ALLOWED)
      if (this.log.isLevelEnabled('debug')) {
        this.log.debug({ protocol: 'dns', client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype), verdict: 'allowed', rule: rule.pattern, group: g.name }, 'dns query')
      }
    }
    if (info.qtype === TYPE_ANY) {
      m.anyQueries.inc(0)
      m.response(RCODE_NOERROR)
      return buildAnyReply(q, info)
    }
    const key = this.resolver.cache.key(q, info)
    const hit = this.resolver.cache.get(key)
    if (hit !== undefined) {
      m.cacheHits.inc(0)
      return this.serve(hit, q, info, st, rule, client, viaTcp, false)
    }
    m.cacheMisses.inc(0)
    const decided = rule
    const kept = Object.assign(new QueryInfo(), info)
    return this.resolver.fetch(key, q, kept, viaTcp).then(
      (entry) => this.serve(entry, q, kept, this.state, decided, client, viaTcp, true),
      (err: { code?: string }) => {
        if (err.code === 'EOVERLOAD') m.overload.inc(0)
        m.response(RCODE_SERVFAIL)
        return buildReply(q, kept, RCODE_SERVFAIL, err.code === 'ETIMEOUT' ? EDE_NO_REACHABLE_AUTHORITY : 0, null)
      },
    )
  }

  private block(q: Buffer, info: QueryInfo, st: State, g: CompiledGroup, rule: Rule | null, client: string): Buffer {
    const m = this.metrics
    m.queries.inc(m.blocked)
    this.decisions?.inc(g.index, PROTO_DNS, V_BLOCKED)
    // NODATA vs NXDOMAIN follows the client's own group: what is allowed below the name for it.
    const rcode =
      st.config.dns.blockResponse === 'refused' ? RCODE_REFUSED : g.policy.hasAllowedBelowWire(q, 12) ? RCODE_NOERROR : RCODE_NXDOMAIN
    m.response(rcode)
    const reply = buildReply(q, info, rcode, EDE_BLOCKED, TEXT_BLOCKED)
    const name = qnameText(q, info.qnameEnd, this.nameScratch)
    this.blocked.record('dns', name)
    if (this.blockLog.allow()) {
      this.log.info(
        {
          protocol: 'dns', client, name, type: typeName(info.qtype), verdict: 'blocked', rule: rule?.pattern ?? null,
          reason: rule === null ? 'not_allowed' : 'denied', group: g.name, mode: g.mode,
        },
        'dns query blocked',
      )
    }
    return reply
  }

  /**
   * Report mode, or a report entry: the query is answered as if allowed (so the device
   * really works, firewall elements included), and counted and logged as what enforce
   * would have done. Not recorded in `blocked_total`: nothing was blocked.
   */
  private wouldBlock(q: Buffer, info: QueryInfo, g: CompiledGroup, rule: Rule | null, passed: Rule, client: string): void {
    const m = this.metrics
    m.queries.inc(m.wouldBlock)
    this.decisions?.inc(g.index, PROTO_DNS, V_WOULD_BLOCK)
    if (this.blockLog.allow()) {
      this.log.info(
        {
          protocol: 'dns', client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype), verdict: 'would_block',
          rule: rule?.pattern ?? null, reason: rule === null ? 'not_allowed' : 'denied', group: g.name, mode: g.mode, report_rule: passed.pattern,
        },
        'dns query would be blocked',
      )
    }
  }

  /** The client's answer from a stored one: rebinding check, render, firewall sink. */
  private serve(
    entry: StoredAnswer,
    q: Buffer,
    info: QueryInfo,
    st: State,
    rule: Rule,
    client: string,
    viaTcp: boolean,
    fresh: boolean,
  ): Buffer | Promise<Buffer> {
    const m = this.metrics
    if (entry.hasPrivate && st.config.dns.rebindProtection && !this.exempt(st, q)) {
      m.rebindBlocked.inc(0)
      m.response(RCODE_SERVFAIL)
      if (this.eventLog.allow()) {
        this.log.warn(
          { protocol: 'dns', client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype), verdict: 'rebind_blocked', rule: rule.pattern },
          'dns answer held a private address',
        )
      }
      return buildReply(q, info, RCODE_SERVFAIL, EDE_FILTERED, TEXT_REBIND)
    }
    const elapsed = Math.floor((this.resolver.now() - entry.storedAt) / 1000)
    const reply = renderAnswer(entry.wire, entry.ttlOffsets, entry.ttls, q, info, elapsed, viaTcp ? 65_535 : info.udpSize)
    m.response(entry.rcode)
    if (this.sink === undefined || entry.rcode !== RCODE_NOERROR) return reply
    if (fresh) {
      entry.sink ??= this.callSink(q, info, rule, Resolver.addressesOf(entry), 0)
      return entry.sink.then(() => reply)
    }
    // A hit in the second half of the entry's life refreshes the firewall elements once,
    // with the remaining TTLs, so they outlive the answer the client now caches.
    if (!entry.refreshed && entry.lifetime - elapsed < entry.lifetime / 2) {
      entry.refreshed = true
      return this.callSink(q, info, rule, Resolver.addressesOf(entry), elapsed).then(() => reply)
    }
    return reply
  }

  private exempt(st: State, q: Buffer): boolean {
    const r = st.exempt?.matchWire(q, 12) ?? null
    return r !== null && r.action === 'allow'
  }

  private callSink(q: Buffer, info: QueryInfo, rule: Rule, addresses: readonly AnswerAddress[], elapsed: number): Promise<void> {
    if (addresses.length === 0) return Promise.resolve()
    const name = qnameText(q, info.qnameEnd, this.nameScratch)
    const aged = elapsed === 0 ? addresses : addresses.map((a) => ({ ...a, ttl: Math.max(0, a.ttl - elapsed) }))
    return Promise.resolve()
      .then(() => this.sink!(name, rule, aged))
      .catch((err: Error) => {
        this.metrics.sinkErrors.inc(0)
        if (this.eventLog.allow()) this.log.error({ err, name }, 'firewall sink failed; answer sent anyway')
      })
  }
}
