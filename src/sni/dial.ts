/**
 * Connects to the first reachable address of a resolved name: Happy Eyeballs-lite.
 *
 * Addresses go IPv6 first, then alternate families (RFC 8305 §4). One attempt starts at
 * once; the next starts when the previous fails or after `staggerMs` (250 ms, RFC 8305's
 * Connection Attempt Delay) without cancelling it, so a black-holed address costs 250 ms
 * instead of a whole connect timeout. Each attempt has its own `connectTimeoutMs`. The
 * first attempt to connect wins and every other one is destroyed. Sockets are opened
 * with an IP literal as host, so Node does no lookup of its own.
 */
import net from 'node:net'
import type { UpstreamError } from './metrics.js'

/** A name with dozens of addresses must not turn into dozens of sockets per client. */
export const MAX_ATTEMPTS = 16
export const STAGGER_MS = 250
/** Same as the client side (proxy.ts): dead peers of idle device streams are found within minutes. */
export const KEEPALIVE_DELAY_MS = 60_000

/**
 * Writable buffer per spliced direction before the other side is paused. Node's default
 * of 16 KiB is below one 64 KiB read, so every chunk paused the reader until the kernel
 * took all of it: one chunk in flight, and a 100 MB download at 0.82× sniproxy with the
 * proxy's core two-thirds busy (bench/RESULTS.md, SNI section). Still a bound: at most
 * this much plus one read is held per direction, and only while a peer is slow.
 */
export const SPLICE_HIGH_WATER_MARK = 128 * 1024

export type DialCallback = (error: UpstreamError | null, socket: net.Socket | null) => void

/** IPv6 first, then alternating, at most MAX_ATTEMPTS. */
export function interleave(v6: readonly string[], v4: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; out.length < MAX_ATTEMPTS && (i < v6.length || i < v4.length); i++) {
    if (i < v6.length) out.push(v6[i]!)
    if (i < v4.length && out.length < MAX_ATTEMPTS) out.push(v4[i]!)
  }
  return out
}

export function classifyConnectError(err: NodeJS.ErrnoException): UpstreamError {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'refused'
    case 'ETIMEDOUT':
      return 'connect_timeout'
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'EAFNOSUPPORT':
      return 'unreachable'
    default:
      return 'connect_error'
  }
}

/**
 * One dial for one client. `done` is called exactly once, unless `cancel()` came first:
 * with the connected socket (timeouts and listeners of the dial removed; the caller
 * must add its own 'error' listener at once) or with the reason of the last failure.
 */
export class Dialer {
  private readonly inFlight = new Set<net.Socket>()
  private nextIndex = 0
  private settled = false
  private staggerTimer: NodeJS.Timeout | null = null
  private lastReason: UpstreamError = 'connect_error'

  constructor(
    private readonly addresses: readonly string[],
    private readonly port: number,
    private readonly connectTimeoutMs: number,
    private readonly done: DialCallback,
    private readonly staggerMs = STAGGER_MS,
  ) {}

  start(): void {
    if (this.addresses.length === 0) this.finish('no_address', null)
    else this.attempt()
  }

  cancel(): void {
    this.settled = true
    this.clearStagger()
    for (const s of this.inFlight) s.destroy()
    this.inFlight.clear()
  }

  private attempt(): void {
    this.clearStagger()
    if (this.settled || this.nextIndex >= this.addresses.length) return
    const host = this.addresses[this.nextIndex++]!
    // @types/node 20 omits highWaterMark from the connect options; Node 20 honours it.
    const options: net.NetConnectOpts & { highWaterMark: number } = {
      host,
      port: this.port,
      allowHalfOpen: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_DELAY_MS,
      highWaterMark: SPLICE_HIGH_WATER_MARK,
    }
    const socket = net.connect(options)
    this.inFlight.add(socket)
    socket.setTimeout(this.connectTimeoutMs)
    const onConnect = (): void => {
      socket.removeListener('error', onError)
      socket.removeListener('timeout', onTimeout)
      socket.setTimeout(0)
      this.inFlight.delete(socket)
      this.cancel()
      this.done(null, socket)
    }
    const onError = (err: Error): void => this.failed(socket, classifyConnectError(err as NodeJS.ErrnoException))
    const onTimeout = (): void => this.failed(socket, 'connect_timeout')
    socket.once('connect', onConnect)
    socket.once('error', onError)
    socket.once('timeout', onTimeout)
    if (this.nextIndex < this.addresses.length) this.staggerTimer = setTimeout(() => this.attempt(), this.staggerMs)
  }

  private failed(socket: net.Socket, reason: UpstreamError): void {
    this.inFlight.delete(socket)
    socket.removeAllListeners('connect')
    // A late error after destroy() must not be unhandled.
    socket.on('error', noop)
    socket.destroy()
    if (this.settled) return
    this.lastReason = reason
    if (this.nextIndex < this.addresses.length) this.attempt()
    else if (this.inFlight.size === 0) this.finish(this.lastReason, null)
  }

  private finish(reason: UpstreamError, socket: net.Socket | null): void {
    this.settled = true
    this.clearStagger()
    this.done(reason, socket)
  }

  private clearStagger(): void {
    if (this.staggerTimer !== null) {
      clearTimeout(this.staggerTimer)
      this.staggerTimer = null
    }
  }
}

function noop(): void {}
