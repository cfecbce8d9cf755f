/**
 * DNS over HTTPS to one upstream (RFC 8484): POST application/dns-message over HTTP/2
 * (node:http2), queries multiplexed as streams on a reused session, a GOAWAY drains the
 * session (streams it refused are tried once more on a new one), idle sessions closed,
 * reconnects after a failed connect backed off. The answer's Cache-Control is ignored:
 * the cache applies the DNS TTLs, as for every other upstream.
 */
import http2 from 'node:http2'
import tls from 'node:tls'
import type { Upstream } from '../config/upstream.js'
import { answerMatches } from './wire.js'
import { UpstreamFailure } from './upstream-failure.js'
import { connectionFailure, IdleTimer, SecurePool, tlsOptions, type SecureContext } from './upstream-secure.js'

/** Bounds of one upstream's sessions (src/dns/README.md, "Encrypted upstreams"). */
export const DOH_LIMITS = {
  /** HTTP/2 sessions per upstream: a new one only when the others are draining or full. */
  sessions: 2,
  /** Streams outstanding per session; the server's SETTINGS_MAX_CONCURRENT_STREAMS caps it further. */
  inflight: 256,
  /** An idle session (no stream) is closed after this long. */
  idleMs: 10_000,
  backoffMinMs: 500,
  backoffMaxMs: 30_000,
}

/** RFC 8484 §6: a DNS message is at most 65 535 bytes. */
const MAX_BODY = 65_535

const {
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_CONTENT_TYPE,
  HTTP2_HEADER_CONTENT_LENGTH,
  HTTP2_HEADER_ACCEPT,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
} = http2.constants

class DohSession {
  readonly session: http2.ClientHttp2Session
  active = 0
  secure = false
  /** A GOAWAY came (or the session is closing): no new streams. */
  draining = false
  closed = false
  /** Why the session ends when egressd or a GOAWAY ends it; otherwise the server or an error did. */
  private ending: 'idle' | 'goaway' | 'stop' | null = null
  private readonly idle = new IdleTimer(DOH_LIMITS.idleMs, () => {
    this.draining = true
    this.ending = 'idle'
    this.session.close()
  })

  constructor(private readonly pool: DohUpstream) {
    const u = pool.upstream
    let sock: tls.TLSSocket | null = null
    this.session = http2.connect(`https://${u.authority ?? u.host}`, {
      createConnection: () => {
        sock = tls.connect(tlsOptions(u, pool.ctx, 'h2', pool.session))
        sock.on('secureConnect', () => {
          this.secure = true
          pool.connected()
        })
        sock.on('session', (s: Buffer) => (pool.session = s))
        return sock
      },
      // No server push: a resolver answers what it is asked.
      settings: { enablePush: false },
    })
    this.session.on('goaway', () => {
      if (this.ending !== null) return
      // Counted when it comes (the session may linger while its last streams finish); no new streams on it.
      this.draining = true
      this.ending = 'goaway'
      pool.ctx.metrics.upstreamClosed.inc(pool.label, 'goaway')
      if (this.active === 0) this.session.close()
    })
    this.session.on('error', (err) => this.end(connectionFailure(err, pool.label, this.secure, pool.ctx)))
    this.session.on('close', () => this.end(null))
    this.armIdle()
  }

  get capacity(): number {
    const remote = this.session.remoteSettings?.maxConcurrentStreams
    return Math.min(DOH_LIMITS.inflight, remote === undefined || remote === 0 ? DOH_LIMITS.inflight : remote)
  }

  request(query: Buffer, questionEnd: number, timeoutMs: number): Promise<Buffer> {
    const label = this.pool.label
    const u = this.pool.upstream
    return new Promise((resolve, reject) => {
      this.active++
      this.idle.disarm()
      let done = false
      const finish = (err: UpstreamFailure | null, answer?: Buffer) => {
        if (done) return
        done = true
        clearTimeout(timer)
        this.active--
        this.armIdle()
        // Only a stream left unfinished is reset: a RST_STREAM after every answer reads as an
        // HTTP/2 "rapid reset" to servers (nghttp2's limit: unbound sent GOAWAY about every 1000 streams).
        if (err !== null && !stream.closed) stream.close(NGHTTP2_CANCEL)
        if (err !== null) reject(err)
        else resolve(answer!)
      }
      let stream: http2.ClientHttp2Stream
      try {
        stream = this.session.request({
          [HTTP2_HEADER_METHOD]: 'POST',
          [HTTP2_HEADER_PATH]: u.path ?? '/dns-query',
          [HTTP2_HEADER_CONTENT_TYPE]: 'application/dns-message',
          [HTTP2_HEADER_ACCEPT]: 'application/dns-message',
          [HTTP2_HEADER_CONTENT_LENGTH]: query.length,
        })
      } catch (err) {
        // ERR_HTTP2_GOAWAY_SESSION, ERR_HTTP2_OUT_OF_STREAMS, a destroyed session: this one is done.
        this.draining = true
        this.active--
        this.armIdle()
        reject(new UpstreamFailure('closed', `upstream ${label}: ${(err as Error).message}`))
        return
      }
      const timer = setTimeout(() => finish(new UpstreamFailure('timeout', `upstream ${label} timed out`)), Math.max(1, timeoutMs))
      const chunks: Buffer[] = []
      let have = 0
      let status = 0
      stream.on('response', (headers) => {
        status = Number(headers[HTTP2_HEADER_STATUS])
        const type = String(headers[HTTP2_HEADER_CONTENT_TYPE] ?? '')
        if (status !== 200) finish(new UpstreamFailure('http', `upstream ${label} answered HTTP ${status}`))
        else if (!/^application\/dns-message\s*(;|$)/i.test(type)) finish(new UpstreamFailure('http', `upstream ${label} answered content type "${type}"`))
      })
      stream.on('data', (chunk: Buffer) => {
        have += chunk.length
        if (have > MAX_BODY) return finish(new UpstreamFailure('http', `upstream ${label} sent a body over ${MAX_BODY} bytes`))
        chunks.push(chunk)
      })
      stream.on('end', () => {
        if (status !== 200) return finish(new UpstreamFailure('closed', `upstream ${label} ended the stream without a response`))
        const answer = chunks.length === 1 ? Buffer.from(chunks[0]!) : Buffer.concat(chunks)
        if (!answerMatches(answer, answer.length, query, questionEnd)) {
          this.pool.ctx.metrics.upstreamIgnored.incLabel('question')
          return finish(new UpstreamFailure('mismatch', `upstream ${label} answered another question`))
        }
        finish(null, answer)
      })
      stream.on('error', (err) => finish(this.streamFailure(err)))
      stream.on('close', () => {
        const refused = stream.rstCode === NGHTTP2_REFUSED_STREAM
        finish(new UpstreamFailure('closed', `upstream ${label}: the stream closed${refused ? ' (refused: GOAWAY)' : ''} before the answer`))
      })
      stream.end(query)
    })
  }

  close(): void {
    this.draining = true
    this.ending = 'stop'
    this.session.destroy()
  }

  private streamFailure(err: Error): UpstreamFailure {
    // Before the handshake, a stream fails with its session's own error (a certificate, a refused connect).
    // Node cancels the pending stream (ERR_HTTP2_STREAM_CANCEL) with the session's error as its cause.
    if (!this.secure) return connectionFailure((err as { cause?: Error }).cause ?? err, this.pool.label, false, this.pool.ctx)
    const code = (err as NodeJS.ErrnoException).code ?? ''
    return new UpstreamFailure(
      this.closed || this.draining || code === 'ERR_HTTP2_STREAM_ERROR' || code === 'ERR_HTTP2_GOAWAY_SESSION' ? 'closed' : 'network',
      `upstream ${this.pool.label}: ${code !== '' ? code + ': ' : ''}${err.message}`,
    )
  }

  private end(failure: UpstreamFailure | null): void {
    if (this.closed) return
    this.closed = true
    this.draining = true
    this.idle.disarm()
    this.session.destroy()
    const why = this.ending ?? (failure === null ? 'server' : 'error')
    if (why !== 'stop' && why !== 'goaway') this.pool.ctx.metrics.upstreamClosed.inc(this.pool.label, why)
    this.pool.ended(this, failure)
  }

  private armIdle(): void {
    if (this.active > 0 || this.closed) return
    this.idle.arm()
  }
}

/** One `https://` upstream: its HTTP/2 sessions (SecurePool), queries multiplexed as streams. */
export class DohUpstream extends SecurePool<DohSession> {
  constructor(upstream: Upstream, ctx: SecureContext) {
    super(upstream, ctx, 'https', DOH_LIMITS)
  }

  /** ID 0 (RFC 8484 §4.1: the stream, not the ID, pairs the answer), then SecurePool's exchange. */
  override exchange(query: Buffer, questionEnd: number, timeoutMs: number): Promise<Buffer> {
    query[0] = 0
    query[1] = 0
    return super.exchange(query, questionEnd, timeoutMs)
  }

  protected send(s: DohSession, query: Buffer, questionEnd: number, timeoutMs: number): Promise<Buffer> {
    return s.request(query, questionEnd, timeoutMs)
  }

  protected pick(): DohSession | UpstreamFailure | null {
    let best: DohSession | null = null
    for (const s of this.conns) if (!s.draining && s.active < s.capacity && (best === null || s.active < best.active)) best = s
    if (best !== null) return best
    const open = this.conns.filter((s) => !s.draining).length
    // Draining sessions finish their streams but hold no slot for new ones.
    if (open >= DOH_LIMITS.sessions || this.conns.length >= DOH_LIMITS.sessions * 2) {
      return new UpstreamFailure('busy', `upstream ${this.label}: ${DOH_LIMITS.sessions} sessions at their stream bound`)
    }
    if (this.backoff.waiting) return this.backoff.failure()
    const s = new DohSession(this)
    this.conns.push(s)
    return s
  }
}
