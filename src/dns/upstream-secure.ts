/**
 * What the DNS over TLS and DNS over HTTPS transports share: the trust store, the TLS
 * options of a connection, how a TLS error is classified, the once-a-minute log of a
 * certificate that fails verification, and the pool around the connections (SecurePool).
 */
import { readFileSync } from 'node:fs'
import tls from 'node:tls'
import { readCaFile } from '../config/ca-file.js'
import { upstreamLabel, type Upstream } from '../config/upstream.js'
import type { Logger } from '../log/logger.js'
import type { DnsMetrics, UpstreamError } from './metrics.js'
import { UpstreamFailure } from './upstream-failure.js'

/** Debian's (and OpenSSL's default) system bundle, maintained by update-ca-certificates. */
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'

/**
 * The CAs trusted for upstream certificates: `dns.upstream_ca_file` when set (instead of
 * the system store, as unbound's tls-cert-bundle), otherwise the system store: Node's
 * `tls.getCACertificates('system')` where it exists (Node >= 22.15), else the system
 * bundle file, else (no such file) Node's bundled Mozilla roots (undefined).
 */
export function trustedCas(caFile: string): string[] | undefined {
  if (caFile !== '') {
    const certs = readCaFile(caFile)
    // The loader read this file moments ago; gone since, nothing verifies: every try fails 'certificate'.
    return typeof certs === 'string' ? [] : certs
  }
  const system = (tls as unknown as { getCACertificates?: (kind: string) => string[] }).getCACertificates?.('system')
  if (system !== undefined && system.length > 0) return system
  try {
    const pem = readFileSync(SYSTEM_BUNDLE, 'latin1')
    const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)
    if (blocks !== null && blocks.length > 0) return blocks
  } catch {
    // No system bundle: Node's own roots.
  }
  return undefined
}

/** What a transport needs besides its upstream. */
export interface SecureContext {
  readonly metrics: DnsMetrics
  readonly log: Logger | null
  /** Trusted CAs (trustedCas); undefined: Node's bundled roots. */
  readonly ca: string[] | undefined
  /** Certificate failures already logged: upstream label → when (ms, performance clock). */
  readonly certLogged: Map<string, number>
}

/** A certificate failure is logged at most this often per upstream. */
export const CERT_LOG_INTERVAL_MS = 60_000

/**
 * TLS options for a connection to `u`: the certificate is verified (never turned off)
 * against `u.tlsName`, or against the address when there is none (an IP SAN);
 * SNI carries the name. `session` resumes an earlier session (a cheaper handshake).
 */
export function tlsOptions(u: Upstream, ctx: SecureContext, alpn: string, session: Buffer | undefined): tls.ConnectionOptions {
  return {
    host: u.host,
    port: u.port,
    ...(u.tlsName !== undefined ? { servername: u.tlsName } : {}),
    ...(ctx.ca !== undefined ? { ca: ctx.ca } : {}),
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    ALPNProtocols: [alpn],
    ...(session !== undefined ? { session } : {}),
  }
}

/** OpenSSL's and Node's codes for a certificate that does not verify (chain, dates, name). */
const CERT_CODES = /CERT|SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|ALTNAME/

/**
 * The failure a connection error means, logged (error level, at most once a minute per
 * upstream) when it is a certificate that fails verification: never a silent fallback.
 */
export function connectionFailure(err: Error, label: string, secure: boolean, ctx: SecureContext): UpstreamFailure {
  const code = (err as NodeJS.ErrnoException).code ?? ''
  let reason: UpstreamError
  if (CERT_CODES.test(code)) reason = 'certificate'
  else if (!secure && (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /ssl|tls|handshake/i.test(err.message))) reason = 'tls'
  else reason = secure ? 'closed' : 'network'
  if (reason === 'certificate') {
    const now = performance.now()
    const last = ctx.certLogged.get(label)
    if (last === undefined || now - last >= CERT_LOG_INTERVAL_MS) {
      ctx.certLogged.set(label, now)
      ctx.log?.error({ upstream: label, code, err: err.message }, 'upstream certificate failed verification; queries go to the next upstream or get SERVFAIL, never to plain DNS')
    }
  }
  return new UpstreamFailure(reason, `upstream ${label}: ${code !== '' ? code + ': ' : ''}${err.message}`)
}

/**
 * When a pool may open its next connection: after each connection that ended before its
 * handshake completed, the wait doubles from `minMs` up to `maxMs`; a completed handshake
 * starts it over. While waiting, the last failure (with the wait left) stands in for a
 * new connection, so a try fails at once instead of piling connects on a dead server.
 */
export class ConnectBackoff {
  private failures = 0
  private retryAt = 0
  private lastFailure: UpstreamFailure | null = null

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
  ) {}

  /** True while no new connection may be opened. */
  get waiting(): boolean {
    return performance.now() < this.retryAt
  }

  /** The failure to report while waiting (null before any failure). */
  failure(): UpstreamFailure | null {
    const last = this.lastFailure
    if (last === null) return null
    return new UpstreamFailure(last.reason, `${last.message} (no new connection for ${Math.ceil(this.retryAt - performance.now())} ms)`)
  }

  /** The failure last recorded, as it was. */
  get last(): UpstreamFailure | null {
    return this.lastFailure
  }

  succeeded(): void {
    this.failures = 0
    this.retryAt = 0
    this.lastFailure = null
  }

  failed(failure: UpstreamFailure): void {
    this.failures++
    this.lastFailure = failure
    this.retryAt = performance.now() + Math.min(this.maxMs, this.minMs * 2 ** Math.min(16, this.failures - 1))
  }
}

/**
 * A connection's idle close: armed when it has nothing outstanding, disarmed when work
 * arrives; when it fires, `onIdle` ends the connection (it is not armed again after that).
 * Unref'd: an idle upstream connection never keeps the process alive.
 */
export class IdleTimer {
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {}

  arm(): void {
    if (this.timer !== null) return
    this.timer = setTimeout(this.onIdle, this.ms)
    this.timer.unref()
  }

  disarm(): void {
    if (this.timer === null) return
    clearTimeout(this.timer)
    this.timer = null
  }
}

/** What a pool needs of its connections. */
export interface PooledConnection {
  /** The TLS handshake completed. */
  readonly secure: boolean
  close(): void
}

/**
 * One encrypted upstream's pool, behind the exchange the resolver calls per try: its
 * connections (DoT) or sessions (DoH), the connect backoff, the resumable TLS session and
 * the one retry. Subclasses say which connection takes a new query (`pick`) and how a
 * query goes out on it (`send`).
 */
export abstract class SecurePool<C extends PooledConnection> {
  readonly label: string
  /** The last TLS session, offered when reconnecting (a resumed handshake). */
  session: Buffer | undefined
  protected readonly conns: C[] = []
  protected readonly backoff: ConnectBackoff
  protected stopped = false

  constructor(
    readonly upstream: Upstream,
    readonly ctx: SecureContext,
    /** The `transport` label of the upstream metrics (and which kind of pool this is). */
    readonly transport: 'tls' | 'https',
    backoff: { readonly backoffMinMs: number; readonly backoffMaxMs: number },
  ) {
    this.label = upstreamLabel(upstream)
    this.backoff = new ConnectBackoff(backoff.backoffMinMs, backoff.backoffMaxMs)
  }

  get connections(): number {
    return this.conns.length
  }

  /**
   * Sends `query` and resolves with the matching answer, or rejects with an
   * UpstreamFailure within `timeoutMs`. A query lost with its connection ('closed': a
   * server's idle close racing the send, a restart, a stream refused by a GOAWAY) costs
   * one more attempt on a fresh connection within the same time; a second loss fails the try.
   */
  async exchange(query: Buffer, questionEnd: number, timeoutMs: number): Promise<Buffer> {
    const deadline = performance.now() + timeoutMs
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.stopped) throw new UpstreamFailure('network', 'the resolver is stopping')
        const conn = this.pick()
        if (conn === null || conn instanceof UpstreamFailure) throw conn ?? this.backoff.last ?? new UpstreamFailure('network', `upstream ${this.label}: not connected`)
        return await this.send(conn, query, questionEnd, deadline - performance.now())
      } catch (err) {
        const f = err as UpstreamFailure
        if (f.reason !== 'closed' || attempt > 0 || this.stopped || deadline - performance.now() < 1) throw f
        this.ctx.metrics.upstreamErrors.inc(this.label, 'closed')
      }
    }
  }

  /** The connection for a new query (possibly a new one), or the failure that stands in for one ('busy', the backoff's). */
  protected abstract pick(): C | UpstreamFailure | null

  /** One query on `conn`, answered or failed within `timeoutMs`. */
  protected abstract send(conn: C, query: Buffer, questionEnd: number, timeoutMs: number): Promise<Buffer>

  /** A handshake completed: the backoff starts over. */
  connected(): void {
    this.backoff.succeeded()
    this.ctx.metrics.upstreamConnections.inc(this.label, this.transport)
  }

  /** A connection ended; one that never completed its handshake pushes the next connect back. */
  ended(conn: C, failure: UpstreamFailure | null): void {
    const i = this.conns.indexOf(conn)
    if (i >= 0) this.conns.splice(i, 1)
    if (conn.secure) return
    this.backoff.failed(failure ?? new UpstreamFailure('network', `upstream ${this.label}: the connection closed before its handshake`))
  }

  /** Stop: every connection closed, its outstanding queries failed. */
  close(): void {
    this.stopped = true
    for (const c of [...this.conns]) c.close()
  }
}
