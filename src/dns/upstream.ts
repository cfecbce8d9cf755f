import dgram from 'node:dgram'
import net from 'node:net'
import { randomFillSync } from 'node:crypto'
import { upstreamLabel, type Upstream } from '../config/upstream.js'
import { EgressdError, UpstreamsFailedError, UpstreamTimeoutError, type FailedTry, type UpstreamTransport } from '../errors.js'
import type { Logger } from '../log/logger.js'
import type { DnsMetrics } from './metrics.js'
import { formatIp, parseIpInto } from '../net/address.js'
import { answerMatches, HEADER_LEN, padQuery, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL } from './wire.js'
import { UpstreamFailure } from './upstream-failure.js'
import { DohUpstream } from './upstream-https.js'
import { trustedCas, type SecureContext } from './upstream-secure.js'
import { DotUpstream } from './upstream-tls.js'

export { UpstreamFailure } from './upstream-failure.js'

/** An answer and the upstream (as configured) that gave it. */
export interface UpstreamAnswer {
  readonly answer: Buffer
  readonly upstream: string
}

interface Target {
  readonly label: string
  /** The DNS over TLS or DNS over HTTPS pool; null for plain DNS. */
  readonly secure: DotUpstream | DohUpstream | null
  readonly host: string
  /** Canonical text, as Node reports a datagram's source address. */
  readonly canonical: string
  readonly port: number
  readonly family: 4 | 6
}

/**
 * Crypto-random 16-bit IDs from a pre-filled pool: randomFillSync per query measured
 * as a syscall-sized cost, a pool refill every 2048 IDs is not.
 */
class IdPool {
  private readonly pool = new Uint16Array(2048)
  private next = this.pool.length

  take(): number {
    if (this.next === this.pool.length) {
      randomFillSync(this.pool)
      this.next = 0
    }
    return this.pool[this.next++]!
  }
}

const MAX_TCP_MESSAGE = 65_535

/**
 * Forwards one query to the configured upstreams, in order, until one answers.
 * Hand-written on dgram/net (docs/design.md, dependencies: dns2's client has a 10 s timeout, no
 * retries and no TCP timeout, and its codec must never re-encode a relayed answer).
 *
 * Each UDP try uses a new socket on a kernel-chosen (randomized) source port and a
 * fresh crypto-random ID; a datagram is accepted only from the queried address and
 * port, with our ID and our question; anything else is counted and ignored while the
 * try keeps waiting (so a spoofed datagram cannot end the wait early). A TC answer
 * is retried over TCP to the same upstream. No socket pooling: per-query sockets keep
 * the source port unpredictable and cost well under the round trip they wrap.
 */
export class UpstreamClient {
  private targets: Target[] = []
  private timeoutMs = 2000
  private readonly ids = new IdPool()
  private readonly takeId = () => this.ids.take()
  /** The `finish` of every try in progress, so close() can end them (sockets and timers) at once. */
  private readonly tries = new Set<(err: Error) => void>()
  private closed = false
  private caFile: string | null = null
  private ctx: SecureContext | null = null
  private readonly certLogged = new Map<string, number>()

  constructor(
    upstreams: readonly Upstream[],
    timeoutMs: number,
    private readonly metrics: DnsMetrics,
    private readonly log: Logger | null = null,
    caFile = '',
  ) {
    this.configure(upstreams, timeoutMs, caFile)
  }

  /**
   * New upstreams and timeout (start and reload). An encrypted upstream configured before,
   * with the same trust store, keeps its connections; one no longer configured is closed
   * once the tries that may still use it are over (one timeout later).
   */
  configure(upstreams: readonly Upstream[], timeoutMs: number, caFile = ''): void {
    const bytes = new Uint8Array(16)
    const secure = upstreams.some((u) => u.transport !== undefined)
    if (caFile !== this.caFile || (secure && this.ctx === null)) {
      this.caFile = caFile
      this.ctx = secure ? { metrics: this.metrics, log: this.log, ca: trustedCas(caFile), certLogged: this.certLogged } : null
    }
    const previous = new Map(this.targets.filter((t) => t.secure !== null).map((t) => [t.label, t.secure!]))
    this.targets = upstreams.map((u) => {
      const n = parseIpInto(u.host, bytes)
      const canonical = n === 0 ? u.host : formatIp(bytes, 0, n)
      const label = upstreamLabel(u)
      let pool: DotUpstream | DohUpstream | null = null
      if (u.transport !== undefined) {
        const old = previous.get(label)
        if (old !== undefined && old.ctx === this.ctx && old.transport === u.transport) {
          pool = old
          previous.delete(label)
        } else {
          pool = u.transport === 'tls' ? new DotUpstream(u, this.ctx!, this.takeId) : new DohUpstream(u, this.ctx!)
        }
      }
      return { label, secure: pool, host: u.host, canonical, port: u.port, family: u.family }
    })
    if (previous.size > 0) {
      const retired = [...previous.values()]
      setTimeout(() => retired.forEach((p) => p.close()), this.timeoutMs + 100).unref()
    }
    this.timeoutMs = timeoutMs
    this.metrics.keepUpstreams(this.targets.map((t) => t.label))
  }

  /** Open connections to encrypted upstreams (tests, the bench). */
  get secureConnections(): number {
    let n = 0
    for (const t of this.targets) n += t.secure?.connections ?? 0
    return n
  }

  /**
   * Sends `query` (its ID bytes are overwritten per try) and returns the first
   * acceptable answer with RCODE NOERROR or NXDOMAIN. Rejects with an UpstreamsFailedError
   * naming every failed try (UpstreamTimeoutError when each one timed out), or ESTOPPED
   * once the resolver is closing. An encrypted upstream that
   * fails (a certificate included) is a failed try like any other: the next upstream
   * is asked, in the configured order, and nothing ever goes out in plain text instead.
   */
  async exchange(query: Buffer, questionEnd: number, viaTcp: boolean): Promise<UpstreamAnswer> {
    const tries: FailedTry[] = []
    let allTimeouts = true
    for (const target of this.targets) {
      if (this.closed) throw new EgressdError('ESTOPPED', 'the resolver is stopping')
      const id = this.ids.take()
      query[0] = id >> 8
      query[1] = id & 0xff
      let transport: UpstreamTransport = target.secure?.transport ?? (viaTcp ? 'tcp' : 'udp')
      try {
        const started = performance.now()
        let answer: Buffer
        if (target.secure !== null) {
          answer = await this.secureTry(target.secure, query, questionEnd)
        } else {
          answer = viaTcp ? await this.tcpTry(target, query, questionEnd) : await this.udpTry(target, query, questionEnd)
          if (!viaTcp && (answer[2]! & 0x02) !== 0) {
            this.metrics.upstreamErrors.inc(target.label, 'truncated')
            transport = 'tcp'
            answer = await this.tcpTry(target, query, questionEnd)
          }
        }
        const rcode = answer[3]! & 0x0f
        if (rcode !== RCODE_NOERROR && rcode !== RCODE_NXDOMAIN) {
          throw new UpstreamFailure(
            rcode === RCODE_SERVFAIL ? 'servfail' : rcode === RCODE_REFUSED ? 'refused' : 'rcode',
            `upstream ${target.label} answered RCODE ${rcode}`,
          )
        }
        this.metrics.observeUpstream(transport, target.label, (performance.now() - started) / 1000)
        return { answer, upstream: target.label }
      } catch (err) {
        const failure = err instanceof UpstreamFailure ? err : new UpstreamFailure('network', `upstream ${target.label}: ${(err as Error).message}`)
        this.metrics.upstreamErrors.inc(target.label, failure.reason)
        if (failure.reason !== 'timeout') allTimeouts = false
        tries.push({ upstream: target.label, transport, reason: failure.reason, error: failure.message })
      }
    }
    if (tries.length === 0) throw new UpstreamsFailedError('no upstream resolvers configured', tries)
    if (allTimeouts) throw new UpstreamTimeoutError(`every upstream timed out (${this.timeoutMs} ms each)`, tries)
    throw new UpstreamsFailedError(tries[tries.length - 1]!.error, tries)
  }

  /** One try to an encrypted upstream, ended by close() like the plain ones. */
  private secureTry(pool: DotUpstream | DohUpstream, query: Buffer, questionEnd: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      // The pool times its own exchanges out: no timer here.
      const finish = this.settleOnce(resolve, reject, null, noop)
      pool.exchange(padQuery(query), questionEnd, this.timeoutMs).then((a) => finish(null, a), (e: Error) => finish(e))
    })
  }

  /**
   * Ends every try in progress (their sockets and timers) and refuses new ones: after the
   * DNS server has answered or failed everything in flight, nothing here may keep the
   * process alive for another upstream timeout.
   */
  close(): void {
    this.closed = true
    for (const fail of [...this.tries]) fail(new UpstreamFailure('network', 'the resolver is stopping'))
    for (const t of this.targets) t.secure?.close()
  }

  /**
   * The one way a try ends, whichever comes first (its answer, its error, its timer, or
   * close()): the first call settles the promise after releasing the socket and timer,
   * later calls do nothing. `timedOut` null: the transport times itself out.
   */
  private settleOnce(
    resolve: (answer: Buffer) => void,
    reject: (err: Error) => void,
    timedOut: (() => Error) | null,
    release: () => void,
  ): (err: Error | null, answer?: Buffer) => void {
    let done = false
    const finish = (err: Error | null, answer?: Buffer): void => {
      if (done) return
      done = true
      this.tries.delete(finish)
      if (timer !== null) clearTimeout(timer)
      release()
      if (err !== null) reject(err)
      else resolve(answer!)
    }
    const timer = timedOut === null ? null : setTimeout(() => finish(timedOut()), this.timeoutMs)
    this.tries.add(finish)
    return finish
  }

  private udpTry(target: Target, query: Buffer, questionEnd: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket(target.family === 6 ? 'udp6' : 'udp4')
      const finish = this.settleOnce(resolve, reject, () => new UpstreamFailure('timeout', `upstream ${target.host}:${target.port} timed out`), () => sock.close())
      sock.on('error', (err) => finish(new UpstreamFailure('network', `upstream ${target.host}:${target.port}: ${err.message}`)))
      sock.on('message', (msg, rinfo) => {
        if (rinfo.port !== target.port || rinfo.address !== target.canonical) {
          this.metrics.upstreamIgnored.incLabel('source')
          return
        }
        if (msg.length < HEADER_LEN || msg[0] !== query[0] || msg[1] !== query[1]) {
          this.metrics.upstreamIgnored.incLabel('id')
          return
        }
        if (!answerMatches(msg, msg.length, query, questionEnd)) {
          this.metrics.upstreamIgnored.incLabel('question')
          return
        }
        finish(null, msg)
      })
      sock.send(query, target.port, target.host, (err) => {
        if (err) finish(new UpstreamFailure('network', `upstream ${target.host}:${target.port}: ${err.message}`))
      })
    })
  }

  private tcpTry(target: Target, query: Buffer, questionEnd: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: target.host, port: target.port })
      const chunks: Buffer[] = []
      let have = 0
      const where = `upstream ${target.host}:${target.port} (tcp)`
      const finish = this.settleOnce(resolve, reject, () => new UpstreamFailure('timeout', `${where} timed out`), () => sock.destroy())
      sock.on('error', (err) => finish(new UpstreamFailure('tcp', `${where}: ${err.message}`)))
      sock.on('end', () => finish(new UpstreamFailure('tcp', `${where} closed before answering`)))
      sock.on('connect', () => {
        const len = Buffer.allocUnsafe(2)
        len.writeUInt16BE(query.length, 0)
        sock.write(Buffer.concat([len, query]))
      })
      sock.on('data', (chunk) => {
        chunks.push(chunk)
        have += chunk.length
        if (have > MAX_TCP_MESSAGE + 2) return finish(new UpstreamFailure('tcp', `${where} sent more than one message`))
        if (have < 2) return
        const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
        chunks.length = 0
        chunks.push(all)
        const need = all.readUInt16BE(0)
        if (have < need + 2) return
        const answer = all.subarray(2, 2 + need)
        if (!answerMatches(answer, answer.length, query, questionEnd)) {
          this.metrics.upstreamIgnored.incLabel('question')
          return finish(new UpstreamFailure('mismatch', `${where} answered another question or ID`))
        }
        finish(null, Buffer.from(answer))
      })
    })
  }
}

function noop(): void {}
