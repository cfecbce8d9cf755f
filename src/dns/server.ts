import dgram from 'node:dgram'
import net, { type AddressInfo } from 'node:net'
import { ListenError } from '../errors.js'
import { formatHostPort, type HostPort } from '../net/host-port.js'
import { FairShare } from '../fair-share.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { QueryHandler } from './handler.js'
import type { DnsMetrics } from './metrics.js'
import { buildHeaderReply, buildReply, parseQuery, PARSE_OK, QueryInfo, RCODE_SERVFAIL } from './wire.js'

/** Per connection: beyond this many unanswered queries we stop reading (backpressure). */
const MAX_PENDING_PER_CONNECTION = 32
/**
 * SO_RCVBUF asked for each UDP socket: while the event loop is held (a major GC, a
 * reload's swap, a burst), datagrams wait in the kernel instead of being dropped. The
 * default 208 KiB holds ~200 queries (each costs ~1 KiB of buffer), 70 ms at 3 000 qps:
 * in the reload bench that lost ~100 queries per reload of 100 000 entries; 4 MiB holds
 * over a second of them. Linux caps it at net.core.rmem_max (4 MiB on the bench VM,
 * often 208 KiB on routers: then nothing changes).
 */
export const UDP_RECV_BUFFER = 4 << 20
/** A client that does not read its answers loses the connection past this much unsent data. */
const MAX_UNSENT_BYTES = 1 << 20
/**
 * stop() waits at most this long for answers still in flight, then answers SERVFAIL to
 * every query still waiting for its upstream: one upstream try (dns.upstream_timeout_ms,
 * default 2000) fits, a failover to the next upstream may not, and a stop that waits
 * for upstreams × timeouts would hold systemd's stop for as long as the slowest one.
 */
export const DRAIN_MS = 2000

/** A query waiting for its upstream; `answer` sends at most once (the real answer or the stop's SERVFAIL). */
interface Pending {
  readonly q: Buffer
  answered: boolean
  answer(reply: Buffer): void
}

export interface TcpLimits {
  readonly maxTcpConnections: number
  readonly tcpIdleTimeoutMs: number
}

interface Conn {
  /** The peer address: the key of its fair share of the connection cap. */
  readonly client: string
  /** Sequence number of its last complete query (or of its accept): the smallest among idle ones is the oldest idle. */
  lastUsed: number
  buffered: Buffer | null
  pending: number
  ended: boolean
  paused: boolean
  timer: NodeJS.Timeout
}

/**
 * Owns the UDP sockets and TCP listeners; the handler decides every answer. UDP:
 * one datagram, one answer (or silence). TCP (RFC 7766): length-prefixed frames,
 * pipelined queries answered in completion order, connections bounded in number,
 * per-connection pending queries, unsent bytes and idle time.
 */
export class DnsServer {
  private readonly udp: dgram.Socket[] = []
  private readonly tcp: net.Server[] = []
  private readonly conns = new Map<net.Socket, Conn>()
  /** Per-client shares of maxTcpConnections (src/fair-share.ts). */
  private readonly tcpShares: FairShare
  private useSeq = 0
  private tcpLimits: TcpLimits
  private readonly pending = new Set<Pending>()
  private stopping = false
  private closed = false
  private readonly errLog = new LogLimiter(10)
  readonly boundAddresses: { udp: AddressInfo[]; tcp: AddressInfo[] } = { udp: [], tcp: [] }

  constructor(
    private readonly listen: readonly HostPort[],
    private readonly handler: QueryHandler,
    private readonly metrics: DnsMetrics,
    private readonly log: Logger,
    limits: TcpLimits,
  ) {
    this.tcpLimits = limits
    this.tcpShares = new FairShare(limits.maxTcpConnections)
  }

  get limits(): TcpLimits {
    return this.tcpLimits
  }

  /** Reload: new bounds apply to new connections; open ones stay. */
  set limits(limits: TcpLimits) {
    this.tcpLimits = limits
    this.tcpShares.budget = limits.maxTcpConnections
  }

  get tcpConnections(): number {
    return this.conns.size
  }

  async start(): Promise<void> {
    try {
      for (const hp of this.listen) {
        if (hp.port !== 0) {
          await this.bindUdp(hp)
          await this.bindTcp(hp)
          continue
        }
        // Port 0 (tests): TCP on the port the kernel gave UDP, so one port serves both as
        // with a fixed port; retried when that TCP port happens to be taken.
        for (let attempt = 0; ; attempt++) {
          const udp = await this.bindUdp(hp)
          try {
            await this.bindTcp({ ...hp, port: udp.address().port })
            break
          } catch (err) {
            if (attempt >= 20 || !(err instanceof ListenError) || err.reason !== 'EADDRINUSE') throw err
            this.udp.pop()
            this.boundAddresses.udp.pop()
            await new Promise<void>((resolve) => udp.close(() => resolve()))
          }
        }
      }
    } catch (err) {
      await this.closeAll()
      throw err
    }
  }

  private bindUdp(hp: HostPort): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const family = hp.family
      const sock = dgram.createSocket({
        type: family === 6 ? 'udp6' : 'udp4',
        ipv6Only: family === 6,
        recvBufferSize: UDP_RECV_BUFFER,
        // We only ever send to the source address of a datagram, always a literal:
        // answering at once spares dns.lookup's process.nextTick per answer.
        lookup: ((address: string, _opts: unknown, cb: (err: null, address: string, family: number) => void) => cb(null, address, family)) as never,
      })
      // A socket whose bind failed still holds a handle (and keeps the process alive).
      const failed = (err: NodeJS.ErrnoException): void => {
        sock.close()
        reject(new ListenError('dns', 'udp', formatHostPort(hp), hp.port, err))
      }
      sock.once('error', failed)
      sock.bind(hp.port, hp.host, () => {
        sock.off('error', failed)
        sock.on('error', (err) => this.sendError(err))
        this.udp.push(sock)
        this.boundAddresses.udp.push(sock.address())
        resolve(sock)
      })
      const send = (reply: Buffer, rinfo: dgram.RemoteInfo) => {
        if (this.closed) return // an answer that outlived stop()'s drain
        try {
          // No callback: Node then tries a synchronous send (uv_udp_try_send) before
          // queueing a request; failures still reach the socket's 'error' listener.
          sock.send(reply, rinfo.port, rinfo.address)
        } catch (err) {
          this.sendError(err as Error)
        }
      }
      sock.on('message', (msg, rinfo) => {
        if (this.stopping) return
        const r = this.safeHandle(msg, rinfo.address, false)
        if (r === null) return
        if (r instanceof Uint8Array) {
          send(r, rinfo)
          return
        }
        const p: Pending = {
          q: msg,
          answered: false,
          answer: (reply) => {
            if (p.answered) return
            p.answered = true
            send(reply, rinfo)
          },
        }
        this.pending.add(p)
        r.then(
          (reply) => {
            this.pending.delete(p)
            if (reply !== null) p.answer(reply)
          },
          (err: Error) => {
            this.pending.delete(p)
            this.internalError(err)
          },
        )
      })
    })
  }

  /**
   * The handler never throws on bad input by design; this net turns a bug into a
   * dropped query and a log line instead of a crashed resolver for the whole segment.
   */
  private safeHandle(q: Buffer, client: string, viaTcp: boolean): Buffer | null | Promise<Buffer | null> {
    try {
      return this.handler.handle(q, client, viaTcp)
    } catch (err) {
      this.internalError(err as Error)
      return null
    }
  }

  private internalError(err: Error): void {
    this.metrics.dropped.incLabel('internal_error')
    if (this.errLog.allow()) this.log.error({ err }, 'dns query handling failed')
  }

  private sendError(err: Error): void {
    this.metrics.dropped.incLabel('send_error')
    if (this.errLog.allow()) this.log.warn({ err }, 'dns send failed')
  }

  private bindTcp(hp: HostPort): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => this.accept(sock))
      const failed = (err: NodeJS.ErrnoException): void => reject(new ListenError('dns', 'tcp', formatHostPort(hp), hp.port, err))
      server.once('error', failed)
      server.listen({ host: hp.host, port: hp.port, ipv6Only: hp.family === 6, backlog: 511 }, () => {
        server.off('error', failed)
        server.on('error', (err) => this.log.error({ err }, 'dns tcp listener error'))
        this.tcp.push(server)
        this.boundAddresses.tcp.push(server.address() as AddressInfo)
        resolve()
      })
    })
  }

  /**
   * A new connection takes one unit of its client's fair share of `max_tcp_connections`.
   * When the rule refuses it, an idle connection (no query pending) makes room: the
   * client's own oldest idle one when the client holds its share, otherwise the oldest
   * idle one of the client holding the most (or anyone's oldest idle). Only when every
   * candidate is busy is the new connection closed. So a client that parks idle
   * connections loses its oldest first, and new clients are not refused for it.
   */
  private accept(sock: net.Socket): void {
    const client = sock.remoteAddress ?? ''
    if (this.stopping || !this.makeRoom(client)) {
      this.metrics.tcpRejected.inc(0)
      sock.destroy()
      return
    }
    this.tcpShares.force(client)
    const conn: Conn = {
      client,
      lastUsed: ++this.useSeq,
      buffered: null,
      pending: 0,
      ended: false,
      paused: false,
      timer: setTimeout(() => this.onIdle(sock, conn), this.limits.tcpIdleTimeoutMs),
    }
    this.conns.set(sock, conn)
    sock.on('data', (chunk: Buffer) => {
      conn.buffered = conn.buffered === null ? chunk : Buffer.concat([conn.buffered, chunk])
      this.drain(sock, conn)
    })
    sock.on('end', () => {
      conn.ended = true
      if (conn.pending === 0) sock.end()
    })
    sock.on('error', () => {
      this.metrics.tcpClosed.incLabel('error')
      sock.destroy()
    })
    sock.on('close', () => this.forget(sock))
  }

  /** True when `client` may take a connection now, after closing at most a few idle ones to make room. */
  private makeRoom(client: string): boolean {
    // Each pass frees one unit; two suffice (one for the budget, one for the share).
    for (let pass = 0; pass < 3; pass++) {
      const why = this.tcpShares.refusal(client)
      if (why === null) return true
      const victim = why === 'share' ? this.oldestIdle(client) : (this.oldestIdle(this.tcpShares.largestHolder()) ?? this.oldestIdle(null))
      if (victim === null) return false
      this.metrics.tcpClosed.incLabel('evicted')
      victim.destroy()
      this.forget(victim)
    }
    return this.tcpShares.refusal(client) === null
  }

  /** The idle connection (no query pending) of `client` (any client: null) whose last query is oldest. */
  private oldestIdle(client: string | null): net.Socket | null {
    let best: net.Socket | null = null
    let seq = Infinity
    for (const [sock, conn] of this.conns) {
      if (conn.pending > 0 || conn.lastUsed >= seq || (client !== null && conn.client !== client)) continue
      best = sock
      seq = conn.lastUsed
    }
    return best
  }

  /** Drops a connection's bookkeeping once (eviction, then its 'close'). */
  private forget(sock: net.Socket): void {
    const conn = this.conns.get(sock)
    if (conn === undefined) return
    clearTimeout(conn.timer)
    this.conns.delete(sock)
    this.tcpShares.release(conn.client)
  }

  /** The idle timer is refreshed only by complete queries, so a trickle of bytes cannot hold a slot. */
  private onIdle(sock: net.Socket, conn: Conn): void {
    if (conn.pending > 0) {
      conn.timer.refresh()
      return
    }
    this.metrics.tcpClosed.incLabel('idle')
    sock.destroy()
  }

  private drain(sock: net.Socket, conn: Conn): void {
    let buf = conn.buffered
    let off = 0
    while (buf !== null && buf.length - off >= 2 && conn.pending < MAX_PENDING_PER_CONNECTION) {
      const len = buf.readUInt16BE(off)
      if (len < 12) {
        this.metrics.queries.inc(this.metrics.malformed)
        this.metrics.tcpClosed.incLabel('garbage')
        sock.destroy()
        return
      }
      if (buf.length - off - 2 < len) break
      // A copy: the frame may outlive this chunk (cache miss), and must not pin it.
      const frame = Buffer.from(buf.subarray(off + 2, off + 2 + len))
      off += 2 + len
      conn.timer.refresh()
      conn.lastUsed = ++this.useSeq
      this.dispatch(sock, conn, frame)
      if (sock.destroyed) return
    }
    conn.buffered = buf === null || off >= buf.length ? null : off === 0 ? buf : buf.subarray(off)
    const full = conn.pending >= MAX_PENDING_PER_CONNECTION
    if (full && !conn.paused) {
      conn.paused = true
      sock.pause()
    } else if (!full && conn.paused) {
      conn.paused = false
      sock.resume()
    }
  }

  private dispatch(sock: net.Socket, conn: Conn, frame: Buffer): void {
    const r = this.safeHandle(frame, sock.remoteAddress ?? '', true)
    if (r === null) {
      // Only a response, garbage from outside the ACL or a short frame are dropped; on a
      // stream there is no way to skip it politely, so the connection goes.
      this.metrics.tcpClosed.incLabel('garbage')
      sock.destroy()
      return
    }
    if (r instanceof Uint8Array) {
      this.write(sock, r)
      return
    }
    conn.pending++
    const p: Pending = {
      q: frame,
      answered: false,
      answer: (reply) => {
        if (p.answered) return
        p.answered = true
        this.write(sock, reply)
      },
    }
    this.pending.add(p)
    r.then(
      (reply) => this.settled(sock, conn, p, reply),
      () => this.settled(sock, conn, p, null),
    )
  }

  private settled(sock: net.Socket, conn: Conn, p: Pending, reply: Buffer | null): void {
    conn.pending--
    this.pending.delete(p)
    if (sock.destroyed) return
    if (reply !== null) p.answer(reply)
    if (conn.paused) this.drain(sock, conn)
    if (conn.ended && conn.pending === 0) sock.end()
  }

  private write(sock: net.Socket, reply: Buffer): void {
    if (sock.destroyed || !sock.writable) return
    if (sock.writableLength > MAX_UNSENT_BYTES) {
      this.metrics.tcpClosed.incLabel('limit')
      sock.destroy()
      return
    }
    const len = Buffer.allocUnsafe(2)
    len.writeUInt16BE(reply.length, 0)
    sock.cork()
    sock.write(len)
    sock.write(reply)
    sock.uncork()
  }

  /** Queries waiting for an upstream answer (UDP and TCP). */
  get inFlight(): number {
    return this.pending.size
  }

  /**
   * Stops accepting, lets answers in flight go out for at most `drainMs` (DRAIN_MS),
   * answers SERVFAIL at once to every query still waiting, then closes everything:
   * every query accepted before the stop gets an answer.
   */
  async stop(drainMs = DRAIN_MS): Promise<void> {
    this.stopping = true
    const closing = this.tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))
    const deadline = Date.now() + drainMs
    while (this.pending.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    this.failPending()
    await this.closeAll()
    await Promise.all(closing)
  }

  /** SERVFAIL (header and question, as the handler's own SERVFAIL) to every query still waiting. */
  private failPending(): void {
    const info = new QueryInfo()
    for (const p of this.pending) {
      const reply = parseQuery(p.q, p.q.length, info) === PARSE_OK ? buildReply(p.q, info, RCODE_SERVFAIL, 0, null) : buildHeaderReply(p.q, RCODE_SERVFAIL)
      this.metrics.response(RCODE_SERVFAIL)
      p.answer(reply)
    }
    this.pending.clear()
  }

  private async closeAll(): Promise<void> {
    this.closed = true
    // A connection with answers still unsent (the stop's SERVFAILs) is ended once they
    // are flushed to the kernel; the others go at once.
    for (const sock of this.conns.keys()) {
      if (sock.writableLength === 0) sock.destroy()
      else sock.end(() => sock.destroy())
    }
    await Promise.all(this.udp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    this.udp.length = 0
    await Promise.all(
      this.tcp.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (!s.listening) return resolve()
            s.close(() => resolve())
          }),
      ),
    )
  }
}
