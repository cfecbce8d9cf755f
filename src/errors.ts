/**
 * The error catalogue: one base error with a stable `code` (as undici does), a subclass
 * per cause that callers branch on (with `instanceof`, never on `code` or messages).
 * Codes are part of the interface: logs and tests match on them, never on messages.
 *
 * | code | class | thrown by |
 * |---|---|---|
 * | ECONFIG | ConfigError, ConfigErrors | config/load.ts, config/yaml-reader.ts |
 * | ECONFIGPATH | ConfigPathError (config/config-path.ts) | no -c given and /etc/egressd/egressd.yaml exists but cannot be used |
 * | EPATTERN | PatternError (policy/pattern.ts) | policy/pattern.ts, policy/compile.ts |
 * | ESTART | StartError (daemon/daemon.ts) | Daemon.start: a listener could not be bound |
 * | ERELOAD | ReloadWorkerError (daemon/reload.ts) | the reload worker failed other than by a configuration error (a bug, or it could not start) |
 * | ELISTEN | ListenError | dns/server.ts, sni/proxy.ts, metrics/server.ts: one listener's bind or listen failed |
 * | EOVERLOAD | OverloadError | dns/resolver.ts: maxPendingUpstream exchanges outstanding, nothing sent |
 * | ETIMEOUT | UpstreamTimeoutError (an UpstreamsFailedError); UpstreamFailure (one try, dns/upstream.ts) | dns/upstream.ts: every upstream timed out |
 * | EUPSTREAM | UpstreamFailure (dns/upstream.ts) | one upstream try failed (network, SERVFAIL, REFUSED, other RCODE) |
 * | ERESOLVE | UpstreamsFailedError; EgressdError | dns/upstream.ts: no upstream answered usably (each try's failure in `tries`); dns/resolver.ts: no A/AAAA records |
 * | ENXDOMAIN | EgressdError | dns/resolver.ts lookup: no such name |
 * | EBADNAME | EgressdError | dns/resolver.ts lookup: not a valid DNS name |
 * | EMALFORMED | MalformedAnswerError | dns/resolver.ts: an upstream answer that cannot be scanned |
 * | ECNAME | CnameBlockedError | dns/resolver.ts lookup: an alias target the caller's policy refuses |
 * | ESTOPPED | EgressdError | dns/upstream.ts: an exchange asked for while the resolver is stopping |
 * | ENFT | NftError (firewall/nft-runner.ts) | the nft command failed |
 * | EINVALIDARG | InvalidArgumentError | a caller broke a function's contract (a bug, not bad input) |
 */
export const ERROR_CODES = [
  'ECONFIG',
  'ECONFIGPATH',
  'EPATTERN',
  'ESTART',
  'ERELOAD',
  'ELISTEN',
  'EOVERLOAD',
  'ETIMEOUT',
  'EUPSTREAM',
  'ERESOLVE',
  'ENXDOMAIN',
  'EBADNAME',
  'EMALFORMED',
  'ESTOPPED',
  'ECNAME',
  'ENFT',
  'EINVALIDARG',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

export class EgressdError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message)
    this.name = new.target.name
  }
}

/** A problem in a configuration file, located as `file:line:col`. */
export class ConfigError extends EgressdError {
  constructor(
    readonly file: string,
    readonly line: number,
    readonly col: number,
    readonly detail: string,
  ) {
    super('ECONFIG', `${file}:${line}:${col}: ${detail}`)
  }
}

/** Several configuration problems found in one pass; `errors` keeps each one. */
export class ConfigErrors extends EgressdError {
  constructor(readonly errors: readonly ConfigError[]) {
    super('ECONFIG', errors.map((e) => e.message).join('\n'))
  }
}

/** The resolver already has its bound of upstream exchanges outstanding; nothing was sent. */
export class OverloadError extends EgressdError {
  constructor(message: string) {
    super('EOVERLOAD', message)
  }
}

/** How an upstream try went: plain UDP, TCP (asked over TCP, or a truncated UDP answer retried), DoT, DoH. */
export const UPSTREAM_TRANSPORTS = ['udp', 'tcp', 'tls', 'https'] as const
export type UpstreamTransport = (typeof UPSTREAM_TRANSPORTS)[number]

/** One failed upstream try, as the query's log line names it. */
export interface FailedTry {
  /** The upstream as configured (`9.9.9.9:53`, `tls://dns.quad9.net@9.9.9.9:853`). */
  readonly upstream: string
  readonly transport: UpstreamTransport
  /** The `egressd_dns_upstream_errors_total` reason: timeout, network, servfail, refused, certificate … */
  readonly reason: string
  /** The system's or the upstream's words (`connect ECONNREFUSED 127.0.0.1:53`, `answered RCODE 2`). */
  readonly error: string
}

/** Every upstream was tried and none answered usably; `tries` says how each failed, in order. */
export class UpstreamsFailedError extends EgressdError {
  constructor(
    message: string,
    readonly tries: readonly FailedTry[],
    code: 'ERESOLVE' | 'ETIMEOUT' = 'ERESOLVE',
  ) {
    super(code, message)
  }
}

/** Every upstream was tried and every try timed out. */
export class UpstreamTimeoutError extends UpstreamsFailedError {
  constructor(message: string, tries: readonly FailedTry[] = []) {
    super(message, tries, 'ETIMEOUT')
  }
}

/**
 * A resolver lookup met an alias target that the caller's policy refuses
 * (`dns.cname_targets: follow_policy`). Here, not in dns/, so the SNI proxy can branch on it.
 */
export class CnameBlockedError extends EgressdError {
  constructor(
    readonly queried: string,
    /** The refused target, escaped as in logs (dns/name-text.ts). */
    readonly target: string,
  ) {
    super('ECNAME', `${queried}: CNAME target ${target} is not allowed`)
  }
}

/** An upstream answer that cannot be scanned (bad names, lengths, a looping alias chain): never cached or relayed. */
export class MalformedAnswerError extends EgressdError {
  constructor(message: string) {
    super('EMALFORMED', message)
  }
}

/** A caller broke a function's contract: a bug in egressd, not bad input from the network or a file. */
export class InvalidArgumentError extends EgressdError {
  constructor(message: string) {
    super('EINVALIDARG', message)
  }
}

/**
 * One listener could not be bound: which service, transport and address, the system's
 * reason (EADDRINUSE, EACCES, EADDRNOTAVAIL …) and what usually fixes it, so `egressd
 * run` can say all of it in one line instead of a stack trace.
 */
export class ListenError extends EgressdError {
  readonly reason: string
  readonly hint: string | null

  constructor(
    readonly service: 'dns' | 'sni' | 'metrics',
    readonly transport: 'udp' | 'tcp',
    readonly address: string,
    readonly port: number,
    cause: NodeJS.ErrnoException,
  ) {
    const reason = cause.code ?? 'unknown'
    const hint = listenHint(service, reason, port)
    super('ELISTEN', `cannot listen on ${address} (${service}, ${transport}): ${REASONS[reason] ?? cause.message}` + (hint === null ? '' : `; ${hint}`))
    this.reason = reason
    this.hint = hint
  }
}

const REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'no interface of this host has that address',
  EAFNOSUPPORT: 'address family not supported (IPv6 disabled?)',
}

function listenHint(service: string, reason: string, port: number): string | null {
  if (reason === 'EADDRINUSE' && service === 'dns' && port === 53) {
    return 'another DNS server holds port 53: systemd-resolved (set DNSStubListener=no in /etc/systemd/resolved.conf, or listen on the segment address only) or dnsmasq (stop it or set bind-interfaces); `ss -lupn sport = :53` shows which'
  }
  if (reason === 'EADDRINUSE') return `another process holds it; \`ss -ltupn sport = :${port}\` shows which`
  if (reason === 'EACCES' && port < 1024) {
    return 'ports below 1024 need root or CAP_NET_BIND_SERVICE (the shipped systemd unit grants it; for a manual run: sudo setcap cap_net_bind_service=+ep "$(command -v node)")'
  }
  if (reason === 'EADDRNOTAVAIL') return 'use an address the host has (`ip -brief address`), or 0.0.0.0 / [::] for all'
  return null
}
