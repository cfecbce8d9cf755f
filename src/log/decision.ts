/**
 * The decision event: the one log line that DNS and SNI write per judged query or
 * connection, and that `egressd suggest` reads back. Its fields are documented here
 * once (and in the README's log schema); both protocols build a `DecisionEvent`
 * and write it through `writeDecision`, so the two sides cannot drift apart.
 *
 * Building the object costs an allocation, so callers build it only once a limiter or
 * `log.isLevelEnabled('debug')` has said the line will be written.
 */
import { UPSTREAM_TRANSPORTS, type FailedTry } from '../errors.js'
import type { Logger } from './logger.js'

export const DECISION_PROTOCOLS = ['dns', 'sni'] as const
export type DecisionProtocol = (typeof DECISION_PROTOCOLS)[number]

/**
 * allowed, blocked and would_block come from the policy (src/policy/decide.ts); the
 * others from what happened around it: a private address in an allowed answer
 * (rebind_blocked), a hello that could not be read (malformed, timeout), an allowed
 * name whose upstream could not be reached (upstream_error; for DNS, timeout when every
 * upstream try timed out).
 */
export const DECISION_VERDICTS = ['allowed', 'blocked', 'would_block', 'rebind_blocked', 'malformed', 'timeout', 'upstream_error'] as const
export type DecisionVerdict = (typeof DECISION_VERDICTS)[number]

export const GROUP_MODES = ['enforce', 'report'] as const

export interface DecisionEvent {
  readonly protocol: DecisionProtocol
  /** The device's address as the socket reported it; null when the socket had already gone. */
  readonly client: string | null
  /** The queried name or the hello's SNI, bytes outside the label alphabet escaped `\DDD` (src/dns/name-text.ts); null when the hello had none. */
  readonly name: string | null
  /** DNS only: the query type (`A`, `AAAA`, `TYPE65534`). */
  readonly type?: string
  readonly verdict: DecisionVerdict
  /** The deciding rule's pattern as matched (`*.example.com`), or null when no rule decided. */
  readonly rule: string | null
  /**
   * Why it was not allowed: `not_allowed`, `denied`, `cname_blocked` (the name is
   * allowed, a CNAME/DNAME target of its answer is not: see `cname`), a ClientHello reader reason
   * (`no_sni`, `ip_literal` …), an upstream error (`connect_timeout` …); null when allowed.
   */
  readonly reason: string | null
  /** The client's group (`default` without groups) and that group's mode. */
  readonly group: string
  readonly mode: (typeof GROUP_MODES)[number]
  /** would_block only: the report entry's pattern, or `*` for the group's `mode: report`. */
  readonly report_rule?: string
  /** SNI only: the hello carried an encrypted_client_hello extension (the name is its outer SNI). */
  readonly ech?: boolean
  /** reason `cname_blocked` only: the alias target that the policy refused (escaped as `name`). */
  readonly cname?: string
  /** DNS timeout and upstream_error only: every upstream try in order, how it went and why it failed. */
  readonly upstreams?: readonly FailedTry[]
}

const MESSAGES: Record<DecisionProtocol, Record<DecisionVerdict, string>> = {
  dns: {
    allowed: 'dns query',
    blocked: 'dns query blocked',
    would_block: 'dns query would be blocked',
    rebind_blocked: 'dns answer held a private address',
    malformed: 'dns query malformed',
    timeout: 'dns upstreams timed out',
    upstream_error: 'dns upstreams failed',
  },
  sni: {
    allowed: 'allowed',
    blocked: 'blocked',
    would_block: 'would be blocked',
    rebind_blocked: 'blocked',
    malformed: 'blocked',
    timeout: 'blocked',
    upstream_error: 'upstream unreachable',
  },
}

/**
 * Allowed decisions are debug lines; a rebinding block and an allowed name that no
 * upstream could answer (DNS timeout, either protocol's upstream_error) are warnings,
 * since they are the operator's to fix; every other verdict is info (a device's doing).
 */
export function decisionLevel(event: Pick<DecisionEvent, 'protocol' | 'verdict'>): 'debug' | 'info' | 'warn' {
  const v = event.verdict
  if (v === 'allowed') return 'debug'
  if (v === 'rebind_blocked' || v === 'upstream_error' || (v === 'timeout' && event.protocol === 'dns')) return 'warn'
  return 'info'
}

/**
 * An observer of written decision lines (the status page's event ring, src/ui). It sees
 * exactly the lines the log gets, after the caller's rate limit: its cost is bounded by
 * that limit, and nothing is added to a query or connection whose line is not written.
 */
export type DecisionTap = (event: DecisionEvent) => void

/** Writes one decision line at its level (the caller has already applied its rate limit), then hands it to `tap`. */
export function writeDecision(log: Logger, event: DecisionEvent): void {
  const msg = MESSAGES[event.protocol][event.verdict]
  // An ECH hello's name is the provider's public name, not the one the device wanted:
  // the message says so, so a block of it reads differently from an ordinary one.
  log[decisionLevel(event)](event, event.ech === true ? `${msg} (ECH hello: outer name)` : msg)
}

/**
 * The one way a service writes its decision lines: the log, then the tap (the status
 * page's ring) when there is one. Built once per service, so no call site can write a
 * line the tap does not see.
 */
export function decisionWriter(log: Logger, tap: DecisionTap | null | undefined): (event: DecisionEvent) => void {
  if (!tap) return (event) => writeDecision(log, event)
  return (event) => {
    writeDecision(log, event)
    tap(event)
  }
}

/**
 * A decision event from a parsed log line, or null when the line is not one (another
 * message, another program, a field of the wrong type). Extra fields (`level`, `time`,
 * `msg`) are ignored. Lines from versions before this event was typed lack some fields
 * (`group`, `mode` on allowed lines, `reason` on rebinding lines): absent, they read as
 * the values those versions meant (`default`, `enforce`, null).
 */
export function parseDecision(value: unknown): DecisionEvent | null {
  if (typeof value !== 'object' || value === null) return null
  const r = value as Record<string, unknown>
  if (!isOneOf(r.protocol, DECISION_PROTOCOLS) || !isOneOf(r.verdict, DECISION_VERDICTS)) return null
  const client = r.client ?? null
  const name = r.name ?? null
  const rule = r.rule ?? null
  const reason = r.reason ?? null
  const group = r.group ?? 'default'
  const mode = r.mode ?? 'enforce'
  if (!nullableString(client) || !nullableString(name) || !nullableString(rule) || !nullableString(reason)) return null
  if (typeof group !== 'string' || !isOneOf(mode, GROUP_MODES)) return null
  if (r.type !== undefined && typeof r.type !== 'string') return null
  if (r.report_rule !== undefined && typeof r.report_rule !== 'string') return null
  if (r.ech !== undefined && typeof r.ech !== 'boolean') return null
  if (r.cname !== undefined && typeof r.cname !== 'string') return null
  if (r.upstreams !== undefined && !isTryList(r.upstreams)) return null
  return {
    protocol: r.protocol,
    client,
    name,
    verdict: r.verdict,
    rule,
    reason,
    group,
    mode,
    ...(r.type !== undefined && { type: r.type }),
    ...(r.report_rule !== undefined && { report_rule: r.report_rule }),
    ...(r.ech !== undefined && { ech: r.ech }),
    ...(r.cname !== undefined && { cname: r.cname }),
    ...(r.upstreams !== undefined && { upstreams: r.upstreams }),
  }
}

function isTryList(v: unknown): v is FailedTry[] {
  return Array.isArray(v) && v.every((x: unknown) => {
    if (typeof x !== 'object' || x === null) return false
    const t = x as Record<string, unknown>
    return typeof t.upstream === 'string' && isOneOf(t.transport, UPSTREAM_TRANSPORTS) && typeof t.reason === 'string' && typeof t.error === 'string'
  })
}

function isOneOf<T extends string>(v: unknown, list: readonly T[]): v is T {
  return typeof v === 'string' && (list as readonly string[]).includes(v)
}

function nullableString(v: unknown): v is string | null {
  return v === null || typeof v === 'string'
}
