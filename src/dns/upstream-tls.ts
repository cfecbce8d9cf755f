/**
 * DNS over TLS to one upstream (RFC 7858): a small pool of persistent connections, each
 * pipelining queries (RFC 7766 §6.2.1) with answers taken in any order and matched by ID
 * (IDs unique per connection), bounded in flight, closed when idle, reopened with backoff
 * after a failed connect.
 */
import tls from 'node:tls'
import type { Upstream } from '../config/upstream.js'
import { answerMatches, HEADER_LEN } from './wire.js'
import { UpstreamFailure } from './upstream-failure.js'
import { connectionFailure, IdleTimer, SecurePool, tlsOptions, type SecureContext } from './upstream-secure.js'

/** Bounds of one upstream's pool (src/dns/README.md, "Encrypted upstreams"). */
export const DOT_LIMITS = {
  /** Connections per upstream. */
  connections: 4,
  /** Queries outstanding per connection (answered, timed out or not): beyond it the next connection, then 'busy'. */
  inflight: 128,
  /** A connection is added only when the least loaded one holds this many. */
  spreadAt: 32,
  /** An idle connection (nothing outstanding) is closed after this long. */
  idleMs: 10_000,
  /** After a failed connect, no new one for 0.5 s, doubling to 30 s; reset by a good handshake. */
  backoffMinMs: 500,
  backoffMaxMs: 30_000,
}

/** A query outstanding on a connection; `abandoned` once its try timed out (its ID stays taken). */
interface Pending {
  readonly sent: Buffer
  readonly questionEnd: number
  resolve: (answer: Buffer) => void
  reject: (err: UpstreamFailure) => void
  abandoned: boolean
}

class DotConnection {
  readonly sock: tls.TLSSocket
  readonly pending = new Map<number, Pending>()
  abandoned = 0
  secure = false
  closed = false
  /** Set when egressd itself ends the connection; otherwise the server or an error did. */
  private ending: 'idle' | 'unresponsive' | 'stop' | null = null
  private buf: Buffer = Buffer.alloc(0)
  private readonly idle = new IdleTimer(DOT_LIMITS.idleMs, () => {
    this.ending = 'idle'
    this.sock.end()
  })

  constructor(private readonly pool: DotUpstream) {
    const u = pool.upstream
    this.sock = tls.connect(tlsOptions(u, pool.ctx, 'dot', pool.session))
    this.sock.setNoDelay(true)
    this.sock.on('secureConnect', () => {
      this.secure = true
      pool.connected()
    })
    this.sock.on('session', (s: Buffer) => (pool.session = s))
    this.sock.on('data', (chunk: Buffer) => this.onData(chunk))
    this.sock.on('error', (err) => this.fail(connectionFailure(err, pool.label, this.secure, pool.ctx)))
    this.sock.on('close', () => this.fail(new UpstreamFailure('closed', `upstream ${pool.label}: the connection closed with the query outstanding`)))
    this.armIdle()
  }

  /** Outstanding queries, abandoned ones included (their IDs are still taken). */
  get load(): number {
    return this.pending.size
  }

  send(query: Buffer, questionEnd: number, takeId: () => number): Pending {
    let id = takeId()
    // 65 536 IDs, at most DOT_LIMITS.inflight taken: a free one comes within a few draws.
    while (this.pending.has(id)) id = takeId()
    const frame = Buffer.allocUnsafe(query.length + 2)
    frame.writeUInt16BE(query.length, 0)
    query.copy(frame, 2)
    frame.writeUInt16BE(id, 2)
    const p: Pending = { sent: frame.subarray(2), questionEnd, resolve: noop, reject: noop, abandoned: false }
    this.pending.set(id, p)
    this.idle.disarm()
    // Written before the handshake ends too: the TLS socket holds it until then.
    this.sock.write(frame)
    return p
  }

  /** A try timed out: its ID stays taken until its answer or the connection's end, so a late answer never meets a newer query. */
  abandon(p: Pending): void {
    if (p.abandoned || this.closed) return
    p.abandoned = true
    this.abandoned++
    // Half the connection taken by queries the server does not answer: start afresh.
    if (this.abandoned > DOT_LIMITS.inflight / 2) {
      this.ending = 'unresponsive'
      this.sock.destroy()
    }
  }

  close(): void {
    this.ending = 'stop'
    this.sock.destroy()
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    let off = 0
    while (this.buf.length - off >= 2) {
      const len = this.buf.readUInt16BE(off)
      if (this.buf.length - off - 2 < len) break
      this.onMessage(this.buf.subarray(off + 2, off + 2 + len))
      off += 2 + len
    }
    // At most one partial message (≤ 65 537 bytes) is kept between chunks.
    this.buf = off === 0 ? this.buf : this.buf.subarray(off)
    if (this.buf.length === 0) this.buf = Buffer.alloc(0)
  }

  private onMessage(msg: Buffer): void {
    const metrics = this.pool.ctx.metrics
    if (msg.length < HEADER_LEN) {
      metrics.upstreamIgnored.incLabel('id')
      return
    }
    const id = msg.readUInt16BE(0)
    const p = this.pending.get(id)
    if (p === undefined) {
      metrics.upstreamIgnored.incLabel('id')
      return
    }
    this.pending.delete(id)
    if (p.abandoned) {
      this.abandoned--
      metrics.upstreamIgnored.incLabel('id')
    } else if (answerMatches(msg, msg.length, p.sent, p.questionEnd)) {
      p.resolve(Buffer.from(msg))
    } else {
      metrics.upstreamIgnored.incLabel('question')
      p.reject(new UpstreamFailure('mismatch', `upstream ${this.pool.label} answered another question for ID ${id}`))
    }
    this.armIdle()
  }

  /** The connection is over: every query still on it fails with `failure`. */
  private fail(failure: UpstreamFailure): void {
    if (this.closed) return
    this.closed = true
    this.idle.disarm()
    this.sock.destroy()
    const why = this.ending ?? (failure.reason === 'closed' ? 'server' : 'error')
    if (why !== 'stop') this.pool.ctx.metrics.upstreamClosed.inc(this.pool.label, why)
    const pending = [...this.pending.values()]
    this.pending.clear()
    this.pool.ended(this, failure)
    for (const p of pending) if (!p.abandoned) p.reject(failure)
  }

  private armIdle(): void {
    if (this.pending.size > 0 || this.closed) return
    this.idle.arm()
  }
}

function noop(): void {}

/** One `tls://` upstream: its connection pool (SecurePool), queries matched by ID on each connection. */
export class DotUpstream extends SecurePool<DotConnection> {
  constructor(
    upstream: Upstream,
    ctx: SecureContext,
    private readonly takeId: () => number,
  ) {
    super(upstream, ctx, 'tls', DOT_LIMITS)
  }

  protected send(conn: DotConnection, query: Buffer, questionEnd: number, timeoutMs: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const p = conn.send(query, questionEnd, this.takeId)
      const timer = setTimeout(() => {
        conn.abandon(p)
        reject(new UpstreamFailure('timeout', `upstream ${this.label} timed out`))
      }, Math.max(1, timeoutMs))
      p.resolve = (answer) => {
        clearTimeout(timer)
        resolve(answer)
      }
      p.reject = (err) => {
        clearTimeout(timer)
        reject(err)
      }
    })
  }

  protected pick(): DotConnection | UpstreamFailure | null {
    let best: DotConnection | null = null
    for (const c of this.conns) if (!c.closed && c.load < DOT_LIMITS.inflight && (best === null || c.load < best.load)) best = c
    const canOpen = this.conns.length < DOT_LIMITS.connections
    if (best !== null && (best.load < DOT_LIMITS.spreadAt || !canOpen)) return best
    if (!canOpen) return new UpstreamFailure('busy', `upstream ${this.label}: ${DOT_LIMITS.connections} connections with ${DOT_LIMITS.inflight} queries outstanding each`)
    if (this.backoff.waiting) return best ?? this.backoff.failure()
    const conn = new DotConnection(this)
    this.conns.push(conn)
    return conn
  }
}
