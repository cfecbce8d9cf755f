/**
 * Server-Sent Events to the open pages, bounded twice:
 * - at most `maxClients` streams; one more is answered 503 with Retry-After;
 * - each stream may have at most `maxBuffered` bytes waiting in its socket's buffer. A
 *   page that does not read (a phone gone to sleep, a stalled network) passes that
 *   bound and is dropped; it reconnects later with Last-Event-ID and is sent what the
 *   ring still holds. Nothing is ever queued per client beyond Node's socket buffer.
 *
 * Messages are framed once and the same string is written to every stream, so the cost
 * is one serialisation per event plus one write per page. Events arriving in one
 * `flushMs` window go out as one write (a flood of lines costs a few writes a second).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

/** Bytes a stream may have unsent before it is dropped: ~1 000 events. */
export const MAX_BUFFERED_BYTES = 256 * 1024
/** A comment line this often keeps proxies and the browser from timing the stream out. */
export const HEARTBEAT_MS = 15_000
export const FLUSH_MS = 100

export interface SseStats {
  clients: number
  /** Streams refused because `maxClients` were open. */
  refused: number
  /** Streams dropped because their buffer passed `maxBuffered`. */
  dropped: number
}

export class SseHub {
  private readonly clients = new Set<ServerResponse>()
  private pending = ''
  private flushTimer: NodeJS.Timeout | null = null
  private heartbeat: NodeJS.Timeout | null = null
  readonly stats: SseStats = { clients: 0, refused: 0, dropped: 0 }

  constructor(
    public maxClients: number,
    private readonly maxBuffered = MAX_BUFFERED_BYTES,
    private readonly flushMs = FLUSH_MS,
  ) {}

  get size(): number {
    return this.clients.size
  }

  /**
   * Takes a request for a stream: 503 when full, else headers and `backlog` (frames the
   * client missed) and the stream stays open until either side ends it.
   */
  open(req: IncomingMessage, res: ServerResponse, backlog: string): void {
    if (this.clients.size >= this.maxClients) {
      this.stats.refused++
      res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '10' }).end(`too many open event streams (ui.clients_max ${this.maxClients})\n`)
      return
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // nginx and similar proxies buffer responses unless told not to.
      'x-accel-buffering': 'no',
    })
    this.clients.add(res)
    this.stats.clients = this.clients.size
    res.socket?.setNoDelay(true)
    const gone = (): void => this.remove(res)
    req.once('close', gone)
    res.once('close', gone)
    // The retry hint, then what was missed; a huge backlog drops the client like any other.
    this.send(res, 'retry: 3000\n\n' + backlog)
    this.heartbeat ??= setInterval(() => this.broadcast(': keep-alive\n\n'), HEARTBEAT_MS).unref()
  }

  /** Queues one framed message for every stream; written within `flushMs`. */
  publish(frame: string): void {
    if (this.clients.size === 0) return
    this.pending += frame
    this.flushTimer ??= setTimeout(this.flush, this.flushMs)
  }

  /** Ends every stream (shutdown or ui disabled). */
  closeAll(): void {
    for (const res of [...this.clients]) res.end()
    this.clients.clear()
    this.stats.clients = 0
    this.stop()
  }

  private readonly flush = (): void => {
    this.flushTimer = null
    const frame = this.pending
    this.pending = ''
    if (frame !== '') this.broadcast(frame)
  }

  private broadcast(frame: string): void {
    for (const res of this.clients) this.send(res, frame)
  }

  private send(res: ServerResponse, frame: string): void {
    if (res.writableLength + Buffer.byteLength(frame) > this.maxBuffered) {
      this.stats.dropped++
      this.remove(res)
      res.destroy()
      return
    }
    res.write(frame)
  }

  private remove(res: ServerResponse): void {
    if (!this.clients.delete(res)) return
    this.stats.clients = this.clients.size
    if (this.clients.size === 0) this.stop()
  }

  private stop(): void {
    if (this.heartbeat !== null) clearInterval(this.heartbeat)
    this.heartbeat = null
    if (this.flushTimer !== null) clearTimeout(this.flushTimer)
    this.flushTimer = null
    this.pending = ''
  }
}

/** One SSE message; `data` must hold no newline (JSON.stringify never emits one). */
export function frame(event: string, data: string, id?: number): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${data}\n\n`
}
