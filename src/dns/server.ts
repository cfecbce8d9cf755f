import dgram from 'node:dgram'
import net, { type AddressInfo } from 'node:net'
import { ListenError } from '../errors.js'
import { formatHostPort, type HostPort } from '../net/host-port.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { QueryHandler } from './handler.js'
import type { DnsMetrics } from './metrics.js'

/** Per connection: beyond this many unanswered queries we stop reading (backpressure). */
const MAX_PENDING_PER_CONNECTION = 32
/** A client that does not read its answers loses the connection past this much unsent data. */
const MAX_UNSENT_BYTES = 1 << 20
/** stop() waits at most this long for answers still in flight. */
const DRAIN_MS = 2000

export interface TcpLimits {
  readonly maxTcpConnections: number
  readonly tcpIdleTimeoutMs: number
}

interface Conn {
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
  private inflight = 0
  private stopping = false
  private closed = false
  private readonly errLog = new LogLimiter(10)
  readonly boundAddresses: { udp: AddressInfo[]; tcp: AddressInfo[] } = { udp: [], tcp: [] }

  constructor(
    private readonly listen: readonly HostPort[],
    private readonly handler: QueryHandler,
    private readonly metrics: DnsMetrics,
    private readonly log: Logger,
    public limits: TcpLimits,
  ) {}

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
        this.inflight++
        r.then(
          (reply) => {
            this.inflight--
            if (reply !== null) send(reply, rinfo)
          },
          (err: Error) => {
            this.inflight--
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

  private accept(sock: net.Socket): void {
    if (this.stopping || this.conns.size >= this.limits.maxTcpConnections) {
      this.metrics.tcpRejected.inc(0)
      sock.destroy()
      return
    }
    const conn: Conn = {
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
    sock.on('close', () => {
      clearTimeout(conn.timer)
      this.conns.delete(sock)
    })
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
    this.inflight++
    r.then(
      (reply) => this.settled(sock, conn, reply),
      () => this.settled(sock, conn, null),
    )
  }

  private settled(sock: net.Socket, conn: Conn, reply: Buffer | null): void {
    conn.pending--
    this.inflight--
    if (sock.destroyed) return
    if (reply !== null) this.write(sock, reply)
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

  /** Stops accepting, lets answers in flight go out (at most ~2 s), then closes everything. */
  async stop(): Promise<void> {
    this.stopping = true
    const closing = this.tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))
    const deadline = Date.now() + DRAIN_MS
    while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    await this.closeAll()
    await Promise.all(closing)
  }

  private async closeAll(): Promise<void> {
    this.closed = true
    for (const sock of this.conns.keys()) sock.destroy()
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
