/**
 * The SNI proxy: owns the listening sockets, the per-connection state machine, timers,
 * counters and log lines. The ClientHello itself is read by the pure ClientHelloReader.
 *
 *   hello ──(name allowed)──▶ dial ──(connected)──▶ splice
 *     │ blocked, malformed, timeout      │ resolve/connect failure
 *     ▼                                  ▼
 *   reset (or a TLS alert)             reset
 *
 * Every connection is counted once in `egressd_sni_connections_total{verdict}`. The
 * address the client dialled is never looked at: the upstream is whatever the allowed
 * name resolves to, so an allowed name cannot be used to reach another address.
 */
import net, { type AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Registry } from 'prom-client'
import type { SniConfig } from '../config/types.js'
import { decisionWriter, type DecisionEvent, type DecisionTap } from '../log/decision.js'
import type { Logger } from '../log/logger.js'
import { LogLimiter } from '../log/log-limiter.js'
import type { BlockedNames } from '../metrics/blocked-names.js'
import { PROTO_SNI, type GroupDecisions } from '../metrics/group-decisions.js'
import { Decision, VERDICT_BLOCKED, VERDICT_WOULD_BLOCK, type Decider } from '../policy/decide.js'
import { CnameBlockedError, ListenError } from '../errors.js'
import { formatHostPort } from '../net/host-port.js'
import { isPrivateIp } from '../net/private-ranges.js'
import { FairShare } from '../fair-share.js'
import { ClientHelloReader, type HelloReason } from './client-hello.js'
import { Dialer, interleave, KEEPALIVE_DELAY_MS, SPLICE_HIGH_WATER_MARK } from './dial.js'
import { helloOutcome, SniMetrics, type UpstreamError, type Verdict } from './metrics.js'

/** What the proxy takes of a compiled configuration: its `sni:` settings and the decision. */
export interface SniPolicy {
  readonly settings: SniConfig
  readonly decider: Decider
}

/**
 * `admit` judges each CNAME/DNAME target (a lowercase wire name) met while resolving;
 * a resolver that honours it rejects with code `ECNAME` and the escaped `target`
 * when it returns false (src/dns/resolver.ts, under `dns.cname_targets: follow_policy`).
 */
export interface SniResolver {
  lookup(name: string, admit?: (target: Uint8Array) => boolean): Promise<{ v4: string[]; v6: string[]; ttl: number }>
  /** What an earlier lookup found, while still fresh: the dial then starts in the same turn. */
  cachedAddresses?(name: string, admit?: (target: Uint8Array) => boolean): { v4: string[]; v6: string[] } | undefined
}

export interface SniDeps {
  log: Logger
  registry: Registry
  blocked: BlockedNames
  resolver: SniResolver
  /** Shared with the DNS server if the daemon wants one budget; 100 lines/s of our own otherwise. */
  logLimiter?: LogLimiter
  /** `egressd_group_decisions_total`, shared with the DNS service. */
  decisions?: GroupDecisions
  /** Sees every decision line the proxy writes (the status page's ring). */
  tap?: DecisionTap
}

const RECORD_HEADER = 5
/** Initial hello buffer; grown by doubling up to maxClientHelloBytes + 5. Most hellos fit. */
const INITIAL_HELLO_BUFFER = 1024
/** After a TLS alert, how long the client gets to close before its socket is destroyed. */
const ALERT_LINGER_MS = 1000

/** Scratch for alias-target verdicts: used synchronously inside `admit`, only its verdict is read. */
const ALIAS_DECISION = new Decision()

const ALERT_UNRECOGNIZED_NAME = 112
const ALERT_ACCESS_DENIED = 49
const ALERT_DECODE_ERROR = 50

const PHASE_HELLO = 0
const PHASE_DIAL = 1
const PHASE_SPLICE = 2
const PHASE_DONE = 3

export class SniProxy {
  readonly metrics: SniMetrics
  readonly logLimiter: LogLimiter
  /** @internal Every decision line goes through here: the log, and the tap (SniDeps.tap) when set. */
  readonly emit: (event: DecisionEvent) => void
  private current: SniPolicy
  /** Each open connection and its client address, the key of its fair share of `max_connections`. */
  private readonly connections = new Map<Connection, string>()
  /** Per-client shares of `sni.max_connections` (src/fair-share.ts): one device cannot take every slot. */
  private readonly shares: FairShare
  private readonly servers: net.Server[] = []
  private stopping = false
  private drained: (() => void) | null = null

  constructor(
    policy: SniPolicy,
    /** @internal read by connections */
    readonly deps: SniDeps,
  ) {
    this.current = policy
    this.shares = new FairShare(policy.settings.maxConnections)
    this.logLimiter = deps.logLimiter ?? new LogLimiter(100)
    this.emit = decisionWriter(deps.log, deps.tap)
    this.metrics = new SniMetrics(deps.registry, () => this.connections.size)
  }

  /** The settings and decision new verdicts use; a reload swaps both at once. */
  get policy(): SniPolicy {
    return this.current
  }

  get boundAddresses(): AddressInfo[] {
    return this.servers.map((s) => s.address() as AddressInfo)
  }

  /** Listens on every `sni.listen`; if one fails, closes the others and rejects. */
  async start(): Promise<void> {
    const listen = this.current.settings.listen
    try {
      for (const hp of listen) {
        const server = net.createServer(
          { allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_DELAY_MS, highWaterMark: SPLICE_HIGH_WATER_MARK },
          (socket) => this.accept(socket),
        )
        // `[::]` beside `0.0.0.0` on the same port would collide unless v6-only.
        const ipv6Only = hp.family === 6 && listen.some((o) => o.family === 4 && o.port === hp.port)
        await new Promise<void>((resolve, reject) => {
          const failed = (err: NodeJS.ErrnoException): void => reject(new ListenError('sni', 'tcp', formatHostPort(hp), hp.port, err))
          server.once('error', failed)
          server.listen({ host: hp.host, port: hp.port, ipv6Only }, () => {
            server.removeListener('error', failed)
            resolve()
          })
        })
        server.on('error', (err) => this.deps.log.error({ err, protocol: 'sni' }, 'listener error'))
        this.servers.push(server)
      }
    } catch (err) {
      await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))))
      this.servers.length = 0
      throw err
    }
  }

  /** Reload: new policy and limits for new verdicts; listeners and open connections stay. */
  update(policy: SniPolicy): void {
    this.current = policy
    this.shares.budget = policy.settings.maxConnections
  }

  /**
   * Stops accepting, resets connections that are not spliced yet, gives spliced ones
   * `graceMs` to finish, then destroys what is left.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true
    const closed = Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))))
    for (const c of [...this.connections.keys()]) if (c.phase !== PHASE_SPLICE) c.abort()
    if (this.connections.size > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        new Promise<void>((resolve) => (this.drained = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
      ])
      clearTimeout(timer)
      for (const c of [...this.connections.keys()]) c.abort()
    }
    await closed
  }

  /** @internal */
  released(c: Connection): void {
    const client = this.connections.get(c)
    if (client === undefined) return
    this.connections.delete(c)
    this.shares.release(client)
    if (this.connections.size === 0 && this.drained !== null) this.drained()
  }

  /**
   * A connection takes one unit of its client's fair share of `sni.max_connections`
   * (src/fair-share.ts): beyond it, or beyond the cap, it is reset at once (verdict
   * "overload"); connections already open are never cut for a newcomer.
   */
  private accept(socket: net.Socket): void {
    const client = socket.remoteAddress ?? ''
    if (this.stopping || !this.shares.take(client)) {
      this.metrics.connections.inc(this.metrics.connections.slot('overload'))
      socket.on('error', noop)
      socket.resetAndDestroy()
      return
    }
    const c = new Connection(this, socket)
    this.connections.set(c, client)
  }
}

/** One client connection through its phases. Only SniProxy creates these. */
class Connection {
  phase = PHASE_HELLO
  private readonly reader: ClientHelloReader
  private buf: Buffer | null = null
  private length = 0
  /** The part of a chunk that did not fit in `buf`: forwarded, never parsed. */
  private overflow: Buffer | null = null
  private timer: NodeJS.Timeout | null
  private name: string | null = null
  private dialer: Dialer | null = null
  private upstream: net.Socket | null = null
  private dialStart = 0
  /** The verdict on the hello, once judged (its group names the client's group in log lines). */
  private readonly decision = new Decision()
  private judged = false
  /** Let through by report mode or a report entry: counted would_block, not allowed. */
  private reported = false
  private readonly onHelloData = (chunk: Buffer): void => this.helloData(chunk)
  private readonly onHelloEnd = (): void => this.reject('incomplete', null)

  constructor(
    private readonly proxy: SniProxy,
    private readonly client: net.Socket,
  ) {
    const sni = proxy.policy.settings
    this.reader = new ClientHelloReader(sni.maxClientHelloBytes)
    this.timer = setTimeout(() => this.reject('timeout', null), sni.handshakeTimeoutMs)
    client.on('data', this.onHelloData)
    client.on('end', this.onHelloEnd)
    client.on('error', (err) => this.clientError(err))
    client.on('close', () => this.closed())
  }

  /** Resets both sockets at once, counting the verdict if none was given yet (stop). */
  abort(): void {
    if (this.phase === PHASE_HELLO) {
      this.count('malformed')
      this.proxy.metrics.hello.incLabel('incomplete')
    } else if (this.phase === PHASE_DIAL) {
      this.count(this.reported ? 'would_block' : 'allowed')
    }
    this.phase = PHASE_DONE
    this.upstream?.resetAndDestroy()
    this.client.resetAndDestroy()
  }

  private helloData(chunk: Buffer): void {
    const cap = this.reader.maxBytes + RECORD_HEADER
    let result
    if (this.buf === null) {
      // First chunk: parse it in place; most hellos arrive whole in one segment.
      result = this.reader.read(chunk, chunk.length)
      if (result.kind === 'continue') {
        // A chunk of `cap` bytes or more always yields a verdict (ClientHelloReader's bound).
        this.buf = Buffer.allocUnsafe(Math.min(cap, Math.max(INITIAL_HELLO_BUFFER, chunk.length * 2)))
        chunk.copy(this.buf, 0)
        this.length = chunk.length
        return
      }
      this.buf = chunk
      this.length = chunk.length
    } else {
      const room = cap - this.length
      const take = Math.min(room, chunk.length)
      if (this.length + take > this.buf.length) {
        const grown = Buffer.allocUnsafe(Math.min(cap, Math.max(this.buf.length * 2, this.length + take)))
        this.buf.copy(grown, 0, 0, this.length)
        this.buf = grown
      }
      chunk.copy(this.buf, this.length, 0, take)
      this.length += take
      if (take < chunk.length) this.overflow = chunk.subarray(take)
      result = this.reader.read(this.buf, this.length)
      if (result.kind === 'continue') return
    }
    this.client.removeListener('data', this.onHelloData)
    this.client.removeListener('end', this.onHelloEnd)
    this.client.pause()
    this.clearTimer()
    if (result.kind === 'error') {
      this.reject(result.reason, result.name)
      return
    }
    const metrics = this.proxy.metrics
    metrics.hello.incLabel('sni_found')
    const name = result.serverName
    this.name = name
    const d = this.proxy.policy.decider.decideName(this.clientAddress, name, this.decision)
    this.judged = true
    this.decide(d.verdict)
    if (result.ech) metrics.echHellos.incLabel(d.verdict === VERDICT_BLOCKED ? 'blocked' : d.verdict === VERDICT_WOULD_BLOCK ? 'would_block' : 'allowed')
    if (d.verdict === VERDICT_BLOCKED) {
      this.proxy.deps.blocked.record('sni', name, this.clientAddress)
      this.count('blocked')
      this.log('blocked', name, d.reason!, result.ech)
      this.refuse(ALERT_ACCESS_DENIED)
      return
    }
    if (d.verdict === VERDICT_WOULD_BLOCK) {
      this.reported = true
      if (this.proxy.logLimiter.allow()) this.write('would_block', name, d.reason, result.ech)
    } else if (this.proxy.deps.log.isLevelEnabled('debug')) {
      this.write('allowed', name, null, result.ech)
    }
    this.phase = PHASE_DIAL
    this.dialStart = performance.now()
    const resolver = this.proxy.deps.resolver
    const known = resolver.cachedAddresses?.(name, this.admitTarget)
    if (known !== undefined) {
      this.resolved(known.v6, known.v4)
      return
    }
    // The resolver has its own upstream timeouts; this bounds the wait even if it never settles.
    this.timer = setTimeout(() => this.upstreamFailed('resolve'), this.proxy.policy.settings.connectTimeoutMs)
    resolver.lookup(name, this.admitTarget).then(
      (addresses) => this.resolved(addresses.v6, addresses.v4),
      (err: unknown) => (err instanceof CnameBlockedError ? this.cnameBlocked(err.target) : this.upstreamFailed('resolve')),
    )
  }

  private reject(reason: HelloReason | 'timeout' | 'incomplete', name: string | null): void {
    if (this.phase !== PHASE_HELLO) return
    this.clearTimer()
    this.proxy.metrics.hello.incLabel(reason === 'timeout' || reason === 'incomplete' ? reason : helloOutcome(reason))
    const verdict: Verdict =
      reason === 'timeout' ? 'timeout' : reason === 'ip_literal' || reason === 'bad_name' ? 'blocked' : 'malformed'
    if (verdict === 'blocked') {
      this.proxy.deps.blocked.record('sni', name ?? '_invalid', this.clientAddress)
      // IP literals and bad names are blocked whatever the group's mode: there is no name to dial.
      this.proxy.policy.decider.refuseUnnamed(this.clientAddress, this.decision)
      this.judged = true
      this.decide(VERDICT_BLOCKED)
    }
    this.count(verdict)
    this.log(verdict, name, reason, false)
    let alert = 0
    switch (reason) {
      case 'ip_literal':
      case 'bad_name':
        alert = ALERT_ACCESS_DENIED
        break
      case 'no_sni':
      case 'unknown_name_type':
        alert = ALERT_UNRECOGNIZED_NAME
        break
      case 'bad_length':
      case 'multiple_names':
      case 'not_client_hello':
      case 'too_large':
        alert = ALERT_DECODE_ERROR
        break
      // not TLS at all, a stall, or a client already gone: an alert means nothing there.
    }
    this.refuse(alert)
  }

  /** A TLS alert when configured and meaningful (`alert` ≠ 0), a TCP reset otherwise. */
  private refuse(alert: number): void {
    this.phase = PHASE_DONE
    const client = this.client
    client.removeListener('data', this.onHelloData)
    client.removeListener('end', this.onHelloEnd)
    if (alert === 0 || this.proxy.policy.settings.onBlock !== 'alert' || client.destroyed) {
      client.resetAndDestroy()
      return
    }
    // Fatal alert, then FIN. The client's further bytes are read and dropped so the
    // close does not turn into a reset that could discard the alert before it is read.
    client.end(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert]))
    client.resume()
    this.timer = setTimeout(() => client.destroy(), ALERT_LINGER_MS)
  }

  private resolved(v6: readonly string[], v4: readonly string[]): void {
    if (this.phase !== PHASE_DIAL) return
    this.clearTimer()
    const config = this.proxy.policy.settings
    let addresses = interleave(v6, v4)
    if (addresses.length === 0) return this.upstreamFailed('no_address')
    if (!config.allowPrivateDestinations) {
      addresses = addresses.filter((a) => !isPrivateIp(a))
      if (addresses.length === 0) return this.upstreamFailed('private_destination')
    }
    this.dialer = new Dialer(addresses, config.upstreamPort, config.connectTimeoutMs, (error, socket) => {
      this.dialer = null
      if (error !== null) this.upstreamFailed(error)
      else this.splice(socket!)
    })
    this.dialer.start()
  }

  /** A CNAME target of an allowed name is not allowed for this client: never dialled, blocked like the name itself. */
  private readonly admitTarget = (target: Uint8Array): boolean =>
    this.proxy.policy.decider.decideWire(this.clientAddress, target, 0, ALIAS_DECISION).verdict !== VERDICT_BLOCKED

  private cnameBlocked(target: string): void {
    if (this.phase !== PHASE_DIAL) return
    this.clearTimer()
    this.proxy.deps.blocked.record('sni', target, this.clientAddress)
    this.count('blocked')
    if (this.proxy.logLimiter.allow()) {
      const d = this.decision
      this.proxy.emit({
        protocol: 'sni', client: this.client.remoteAddress ?? null, name: this.name, verdict: 'blocked', rule: null,
        reason: 'cname_blocked', group: d.group.name, mode: d.group.mode, cname: target,
      })
    }
    this.refuse(ALERT_ACCESS_DENIED)
  }

  private upstreamFailed(reason: UpstreamError): void {
    if (this.phase !== PHASE_DIAL) return
    this.phase = PHASE_DONE
    this.clearTimer()
    this.dialer?.cancel()
    this.dialer = null
    this.proxy.metrics.upstreamErrors.incLabel(reason)
    this.count('upstream_error')
    this.log('upstream_error', this.name, reason, false)
    this.client.resetAndDestroy()
  }

  private splice(upstream: net.Socket): void {
    const client = this.client
    if (this.phase !== PHASE_DIAL || client.destroyed) {
      upstream.destroy()
      return
    }
    this.phase = PHASE_SPLICE
    this.upstream = upstream
    const metrics = this.proxy.metrics
    metrics.connectSeconds.observe((performance.now() - this.dialStart) / 1000)
    this.count(this.reported ? 'would_block' : 'allowed')
    const bytes = metrics.bytes
    const up = metrics.upstreamSlot
    const down = metrics.downstreamSlot

    upstream.on('error', () => client.resetAndDestroy())
    // Everything read so far, exactly as received: the hello and whatever followed it.
    const head = this.buf!.subarray(0, this.length)
    bytes.inc(up, head.length)
    upstream.write(head)
    if (this.overflow !== null) {
      bytes.inc(up, this.overflow.length)
      upstream.write(this.overflow)
    }
    this.buf = null
    this.overflow = null

    // Manual pause/resume rather than pipe(): the byte counts stay live for
    // long-lived device streams instead of appearing only at close.
    client.on('data', (chunk: Buffer) => {
      bytes.inc(up, chunk.length)
      if (!upstream.write(chunk)) client.pause()
    })
    upstream.on('drain', () => client.resume())
    upstream.on('data', (chunk: Buffer) => {
      bytes.inc(down, chunk.length)
      if (!client.write(chunk)) upstream.pause()
    })
    client.on('drain', () => upstream.resume())
    // Half-close: each FIN is passed on; a socket is destroyed (autoDestroy) once both
    // of its directions are done.
    // A client that sent its FIN while we dialled has already emitted 'end' (a paused
    // socket still does once its buffer is empty): pass that FIN on now.
    if (client.readableEnded) upstream.end()
    else client.on('end', () => upstream.end())
    upstream.on('end', () => client.end())
    const idle = this.proxy.policy.settings.idleTimeoutMs
    if (idle > 0) {
      // The client socket sees both directions (reads up, writes down): one timer covers both.
      client.setTimeout(idle, () => {
        upstream.destroy()
        client.destroy()
      })
    }
    client.resume()
  }

  private clientError(_err: Error): void {
    // A reset or a write failure: whatever phase we are in, the upstream side goes too.
    if (this.phase === PHASE_HELLO) this.reject('incomplete', null)
    this.upstream?.resetAndDestroy()
  }

  private closed(): void {
    this.clearTimer()
    if (this.phase === PHASE_HELLO) this.reject('incomplete', null)
    if (this.phase === PHASE_DIAL) {
      // The client left while we dialled; the name was allowed and nothing failed upstream.
      this.count(this.reported ? 'would_block' : 'allowed')
      this.phase = PHASE_DONE
    }
    this.dialer?.cancel()
    this.dialer = null
    this.proxy.released(this)
  }

  private count(verdict: Verdict): void {
    this.proxy.metrics.connections.incLabel(verdict)
  }

  /** One per judged hello, in the client's group. */
  private decide(verdict: number): void {
    this.proxy.deps.decisions?.inc(this.decision.group.index, PROTO_SNI, verdict)
  }

  private get clientAddress(): string {
    return this.client.remoteAddress ?? ''
  }

  /** A line through the proxy's limiter (every verdict but allowed and would_block, which choose their own gate). */
  private log(verdict: LoggedVerdict, name: string | null, reason: string, ech: boolean): void {
    if (this.proxy.logLimiter.allow()) this.write(verdict, name, reason, ech)
  }

  private write(verdict: LoggedVerdict, name: string | null, reason: string | null, ech: boolean): void {
    // Timeouts and malformed hellos are logged before any verdict chose a group: look it up for the line.
    const d = this.decision
    const g = this.judged ? d.group : this.proxy.policy.decider.groupOf(this.clientAddress)
    const judgedRule = this.judged && (verdict === 'allowed' || verdict === 'blocked' || verdict === 'would_block') ? d.rule : null
    this.proxy.emit({
      protocol: 'sni', client: this.client.remoteAddress ?? null, name, verdict, rule: judgedRule?.pattern ?? null, reason,
      group: g.name, mode: g.mode, ...(verdict === 'would_block' && { report_rule: d.passedBy!.pattern }), ...(ech && { ech }),
    })
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }
}

/** Overload is counted at accept, before any connection exists to log it. */
type LoggedVerdict = Exclude<Verdict, 'overload'>

function noop(): void {}
