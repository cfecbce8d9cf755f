import type { DnsConfig } from '../config/types.js'
import { MalformedAnswerError, OverloadError, UpstreamsFailedError, UpstreamTimeoutError } from '../errors.js'
import { decisionWriter, type DecisionEvent, type DecisionTap } from '../log/decision.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { BlockedNames } from '../metrics/blocked-names.js'
import { PROTO_DNS, type GroupDecisions } from '../metrics/group-decisions.js'
import { Decision, VERDICT_ALLOWED, VERDICT_BLOCKED, VERDICT_WOULD_BLOCK, type Decider } from '../policy/decide.js'
import type { Policy } from '../policy/match.js'
import type { Rule } from '../policy/types.js'
import { AnswerFeed, type AllowedAnswer, type AllowedAnswerSink } from './answer-sink.js'
import type { StoredAnswer } from './cache.js'
import { ClientAcl } from './client-acl.js'
import type { DnsMetrics } from './metrics.js'
import { wireNameText } from './name-text.js'
import { RateLimiter } from './rate-limiter.js'
import { Resolver } from './resolver.js'
import {
  buildAnyReply,
  buildBadvers,
  buildHeaderReply,
  buildReply,
  CLASS_IN,
  EDE_BLOCKED,
  EDE_FILTERED,
  EDE_INVALID_DATA,
  EDE_NO_REACHABLE_AUTHORITY,
  EDE_PROHIBITED,
  parseQuery,
  PARSE_DROP,
  PARSE_FORMERR,
  PARSE_NOTIMP,
  qnameText,
  QueryInfo,
  RCODE_BADVERS,
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NOTIMP,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  RCODE_SERVFAIL,
  renderAnswer,
  TYPE_ANY,
  TYPE_AXFR,
  TYPE_IXFR,
} from './wire.js'

/** What the DNS side takes of a compiled configuration: its own settings, the decision, the rebinding exemptions. */
export interface DnsPolicy {
  readonly settings: DnsConfig
  readonly decider: Decider
  /** `dns.rebind_exempt` compiled; null when empty. */
  readonly rebindExempt: Policy | null
}

const TEXT_BLOCKED = Buffer.from('egressd: not on allowlist')
const TEXT_REBIND = Buffer.from('egressd: private address in answer')
const TEXT_SVCB_MALFORMED = Buffer.from('egressd: malformed HTTPS/SVCB record')

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
  /** One bucket shared by every source outside `dns.clients`; null with `answer: drop`. */
  readonly outside: RateLimiter | null
  readonly settings: DnsConfig
  readonly decider: Decider
  readonly exempt: Policy | null

  constructor(policy: DnsPolicy, previous: State | null) {
    this.settings = policy.settings
    this.decider = policy.decider
    this.exempt = policy.rebindExempt
    this.acl = new ClientAcl(policy.settings.clients)
    const rl = policy.settings.rateLimit
    const old = previous?.limiter
    this.limiter =
      rl.qps <= 0 ? null : old && old.qps === rl.qps && old.burst === rl.burst ? old : new RateLimiter(rl.qps, rl.burst)
    const oc = policy.settings.outsideClients
    const oldOutside = previous?.outside
    this.outside =
      oc.answer === 'drop' ? null : oldOutside && oldOutside.qps === oc.refusedQps ? oldOutside : new RateLimiter(oc.refusedQps, oc.refusedQps, 1)
  }
}

/**
 * The thin link between the sockets and the resolver core: parse, client ACL, rate
 * limit, the decision (src/policy/decide.ts), then a reply built from the query's bytes
 * (blocked, refused, malformed) or from the cache/upstream (allowed). Returns the reply,
 * null to stay silent, or a promise of either for a cache miss.
 *
 * The blocked and cache-hit paths are synchronous and touch no promise: the blocked
 * path matches the wire bytes (`verdictWire`) and decodes the name once, for the
 * `blocked_total` label the interface requires; the hit path is an LRU get with a
 * latin1 key, one Buffer copy and an ID/TTL patch.
 */
export class QueryHandler {
  private state: State
  /** Reused by every synchronous step; a cache miss copies what it keeps. */
  private readonly info = new QueryInfo()
  private readonly decision = new Decision()
  /** For the alias targets of an answer (the query's own decision is still being used). */
  private readonly aliasDecision = new Decision()
  private readonly nameScratch = Buffer.allocUnsafe(256)
  private readonly feed: AnswerFeed | null
  private readonly blockLog = new LogLimiter(100)
  private readonly eventLog = new LogLimiter(20)
  private rateToggle = 0
  /** Every decision line goes through here: the log, and the tap (DnsDeps.tap) when set. */
  private readonly emit: (event: DecisionEvent) => void

  constructor(
    policy: DnsPolicy,
    readonly resolver: Resolver,
    private readonly metrics: DnsMetrics,
    private readonly log: Logger,
    private readonly blocked: BlockedNames,
    sink: AllowedAnswerSink | undefined,
    private readonly decisions: GroupDecisions | null = null,
    tap: DecisionTap | null = null,
  ) {
    this.emit = decisionWriter(log, tap)
    this.state = new State(policy, null)
    this.info.maxUdpSize = policy.settings.maxUdpPayload
    this.feed = sink === undefined ? null : new AnswerFeed(sink, (err, name) => {
      this.metrics.sinkErrors.inc(0)
      if (this.eventLog.allow()) this.log.error({ err, name }, 'firewall sink failed; answer sent anyway')
    })
  }

  update(policy: DnsPolicy): void {
    // Cached answers were stored under the old `dns.ech` (Resolver.store strips them): stripped
    // ones must not outlive a switch to pass, nor raw ones a switch to strip.
    if (policy.settings.ech !== this.state.settings.ech) this.resolver.cache.clear()
    this.state = new State(policy, this.state)
    this.info.maxUdpSize = policy.settings.maxUdpPayload
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
      // Sources outside the ACL may be spoofed: one shared bucket bounds what egressd
      // reflects to all of them together, and the EDE carries no text (a few bytes less
      // per reflected datagram). Garbage from outside earns no answer at all.
      if (parsed !== 0 || st.outside === null || !st.outside.take('')) {
        m.dropped.incLabel('outside_clients')
        return null
      }
      m.response(RCODE_REFUSED)
      return buildReply(q, info, RCODE_REFUSED, EDE_PROHIBITED, null)
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
    // One branch on the hot path for what a forwarder must not pass on (see protocolRefusal).
    if (info.qclass !== CLASS_IN || info.ednsVersion !== 0 || info.qtype === TYPE_AXFR || info.qtype === TYPE_IXFR) {
      return this.protocolRefusal(q, info)
    }
    const d = st.decider.decideWire(client, q, 12, this.decision)
    if (d.verdict === VERDICT_ALLOWED) {
      m.queries.inc(m.allowed)
      this.decisions?.inc(d.group.index, PROTO_DNS, VERDICT_ALLOWED)
      if (this.log.isLevelEnabled('debug')) this.logDecision(q, info, client, d)
    } else if (d.verdict === VERDICT_WOULD_BLOCK) {
      // Report mode, or a report entry: answered as if allowed (the device really works,
      // firewall elements included), counted and logged as what enforce would have done.
      // Not in `blocked_total`: nothing was blocked.
      m.queries.inc(m.wouldBlock)
      this.decisions?.inc(d.group.index, PROTO_DNS, VERDICT_WOULD_BLOCK)
      if (this.blockLog.allow()) this.logDecision(q, info, client, d)
    } else {
      return this.block(q, info, client, d)
    }
    const rule = d.passedBy!
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
    const kept = Object.assign(new QueryInfo(), info)
    return this.resolver.fetch(key, q, kept, viaTcp, client).then(
      (entry) => this.serve(entry, q, kept, this.state, rule, client, viaTcp, true),
      (err: unknown) => {
        if (err instanceof OverloadError) m.overload.inc(0)
        else if (this.eventLog.allow()) this.logUpstreamFailure(q, kept, client, rule, err)
        m.response(RCODE_SERVFAIL)
        return buildReply(q, kept, RCODE_SERVFAIL, err instanceof UpstreamTimeoutError ? EDE_NO_REACHABLE_AUTHORITY : 0, null)
      },
    )
  }

  /**
   * The line for an allowed query that got SERVFAIL because no upstream answered usably:
   * every try (UDP, TCP, DoT, DoH) with its transport and the system's reason, so "port 53
   * over TCP is filtered upstream" reads as such. Under the event limiter (20/s): an
   * upstream outage fails every miss, and the counters already carry the volume.
   */
  private logUpstreamFailure(q: Buffer, info: QueryInfo, client: string, rule: Rule, err: unknown): void {
    const tries = err instanceof UpstreamsFailedError ? err.tries : null
    const last = tries !== null && tries.length > 0 ? tries[tries.length - 1]! : null
    const g = this.state.decider.groupOf(client)
    this.emit({
      protocol: 'dns', client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype),
      verdict: err instanceof UpstreamTimeoutError ? 'timeout' : 'upstream_error', rule: rule.pattern,
      reason: last?.reason ?? (tries !== null ? 'no_upstreams' : err instanceof MalformedAnswerError ? 'malformed' : 'error'),
      group: g.name, mode: g.mode, ...(tries !== null && { upstreams: tries }),
    })
  }

  /**
   * Queries answered without a decision or an upstream: EDNS version > 0 gets BADVERS
   * (RFC 6891); classes other than IN (CH, HS, NONE, ANY, 0: the policy and the
   * upstreams speak IN only, and `version.bind CH TXT` is nobody's business) and zone
   * transfers (AXFR/IXFR, over UDP or TCP: a forwarder has no zones) get REFUSED. Counted
   * as refused queries and in `egressd_dns_protocol_refused_total{reason}`.
   */
  private protocolRefusal(q: Buffer, info: QueryInfo): Buffer {
    const m = this.metrics
    m.queries.inc(m.refused)
    if (info.ednsVersion !== 0) {
      m.protocolRefused.incLabel('badvers')
      m.response(RCODE_BADVERS)
      return buildBadvers(q, info)
    }
    m.protocolRefused.incLabel(info.qclass !== CLASS_IN ? 'class' : 'xfr')
    m.response(RCODE_REFUSED)
    return buildReply(q, info, RCODE_REFUSED, 0, null)
  }

  private block(q: Buffer, info: QueryInfo, client: string, d: Decision): Buffer {
    const m = this.metrics
    m.queries.inc(m.blocked)
    this.decisions?.inc(d.group.index, PROTO_DNS, d.verdict)
    // NODATA vs NXDOMAIN follows the client's own group: what is allowed below the name for it.
    const rcode = d.answer === 'refused' ? RCODE_REFUSED : d.answer === 'nodata' ? RCODE_NOERROR : RCODE_NXDOMAIN
    m.response(rcode)
    const reply = buildReply(q, info, rcode, EDE_BLOCKED, TEXT_BLOCKED)
    const name = qnameText(q, info.qnameEnd, this.nameScratch)
    this.blocked.record('dns', name, client)
    if (this.blockLog.allow()) this.logDecision(q, info, client, d, name)
    return reply
  }

  private logDecision(q: Buffer, info: QueryInfo, client: string, d: Decision, name = qnameText(q, info.qnameEnd, this.nameScratch)): void {
    const g = d.group
    const event: DecisionEvent = {
      protocol: 'dns', client, name, type: typeName(info.qtype), verdict: d.verdictName, rule: d.rule?.pattern ?? null,
      reason: d.reason, group: g.name, mode: g.mode,
      ...(d.verdict === VERDICT_WOULD_BLOCK && { report_rule: d.passedBy!.pattern }),
    }
    this.emit(event)
  }

  /** The client's answer from a stored one: alias targets, `dns.ech`, rebinding check, render, firewall sink. */
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
    const aliases = entry.aliases
    if (aliases !== undefined && aliases.length > 0 && st.settings.cnameTargets === 'follow_policy') {
      for (const target of aliases) {
        const d = st.decider.decideWire(client, target, 0, this.aliasDecision)
        if (d.verdict === VERDICT_BLOCKED) return this.cnameBlocked(q, info, st, client, target, d)
      }
    }
    // `dns.ech: strip` ran when the answer was stored (Resolver.store); one it could not read is never relayed.
    if (entry.svcbMalformed !== undefined) return this.svcbMalformed(q, info, rule, client, entry.svcbMalformed)
    if (entry.hasPrivate && st.settings.rebindProtection && !this.exempt(st, q)) {
      m.rebindBlocked.inc(0)
      m.response(RCODE_SERVFAIL)
      if (this.eventLog.allow()) {
        const g = st.decider.groupOf(client)
        this.emit({
          protocol: 'dns', client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype),
          verdict: 'rebind_blocked', rule: rule.pattern, reason: 'private_address', group: g.name, mode: g.mode,
        })
      }
      return buildReply(q, info, RCODE_SERVFAIL, EDE_FILTERED, TEXT_REBIND)
    }
    const elapsed = Math.floor((this.resolver.now() - entry.storedAt) / 1000)
    const reply = renderAnswer(entry.wire, entry.ttlOffsets, entry.ttls, q, info, elapsed, viaTcp ? 65_535 : info.udpSize)
    if (reply.length < entry.wire.length) m.truncated.inc(0)
    m.response(entry.rcode)
    const feed = this.feed
    if (feed === null || entry.rcode !== RCODE_NOERROR) return reply
    const answer = (): AllowedAnswer => this.allowedAnswer(q, info, rule, client, entry, elapsed)
    const wait = fresh ? feed.fresh(entry, answer) : feed.hit(entry, elapsed, answer)
    return wait === null ? reply : wait.then(() => reply)
  }

  /** An HTTPS/SVCB answer `dns.ech: strip` cannot read (svcb-ech.ts): SERVFAIL + EDE 24 "Invalid Data". */
  private svcbMalformed(q: Buffer, info: QueryInfo, rule: Rule, client: string, reason: string): Buffer {
    const m = this.metrics
    m.svcbMalformed.inc(0)
    m.response(RCODE_SERVFAIL)
    if (this.eventLog.allow()) {
      this.log.warn(
        { client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype), rule: rule.pattern, reason },
        'HTTPS/SVCB answer not relayed: malformed SvcParams (dns.ech: strip)',
      )
    }
    return buildReply(q, info, RCODE_SERVFAIL, EDE_INVALID_DATA, TEXT_SVCB_MALFORMED)
  }

  /**
   * An allowed name whose answer aliases a name the client may not reach: answered as a
   * block (NXDOMAIN, or REFUSED with `block_response: refused`; EDE 15 naming the
   * target), never given to the firewall sink, logged with reason `cname_blocked`.
   */
  private cnameBlocked(q: Buffer, info: QueryInfo, st: State, client: string, target: Buffer, d: Decision): Buffer {
    const m = this.metrics
    m.cnameBlocked.inc(0)
    const rcode = st.settings.blockResponse === 'refused' ? RCODE_REFUSED : RCODE_NXDOMAIN
    m.response(rcode)
    const text = wireNameText(target)
    // Bounded so the reply stays well under any UDP size: 60 + 200 bytes of text.
    const shown = text.length > 200 ? text.slice(0, 200) + '…' : text
    const reply = buildReply(q, info, rcode, EDE_BLOCKED, Buffer.from(`egressd: CNAME target ${shown} not on allowlist`))
    this.blocked.record('dns', text, client)
    if (this.blockLog.allow()) {
      this.emit({
        protocol: 'dns', client, name: qnameText(q, info.qnameEnd, this.nameScratch), type: typeName(info.qtype),
        verdict: 'blocked', rule: d.rule?.pattern ?? null, reason: 'cname_blocked', group: d.group.name, mode: d.group.mode, cname: text,
      })
    }
    return reply
  }

  private exempt(st: State, q: Buffer): boolean {
    const r = st.exempt?.matchWire(q, 12) ?? null
    return r !== null && r.action === 'allow'
  }

  /** The sink's view of an answer: its addresses with the TTLs left after `elapsed` seconds in the cache. */
  private allowedAnswer(q: Buffer, info: QueryInfo, rule: Rule, client: string, entry: StoredAnswer, elapsed: number): AllowedAnswer {
    const addresses = Resolver.addressesOf(entry)
    return {
      name: qnameText(q, info.qnameEnd, this.nameScratch),
      rule,
      client,
      addresses: elapsed === 0 ? addresses : addresses.map((a) => ({ ...a, ttl: Math.max(0, a.ttl - elapsed) })),
    }
  }
}
