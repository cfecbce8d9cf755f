/**
 * The load generator: real TLS clients (`tls.connect`, servername `bench.example`, the
 * bench CA, certificate checked) against one target port. Every loop checks what it got
 * (status line, body bytes, no session reuse) and counts what failed; every loop is
 * bounded by time and by count.
 */
import net from 'node:net'
import tls from 'node:tls'
import { performance } from 'node:perf_hooks'
import { SMALL_BODY } from './backend.js'

export const SERVERNAME = 'bench.example'
const HOST = '127.0.0.1'
const SOCKET_TIMEOUT_MS = 10_000
const REQ_SMALL = Buffer.from(`GET /small HTTP/1.1\r\nHost: ${SERVERNAME}\r\nConnection: close\r\n\r\n`)
const REQ_SMALL_KEEPALIVE = Buffer.from(`GET /small HTTP/1.1\r\nHost: ${SERVERNAME}\r\n\r\n`)
const REQ_BIG = Buffer.from(`GET /big HTTP/1.1\r\nHost: ${SERVERNAME}\r\nConnection: close\r\n\r\n`)

export interface Client {
  /** Parsed once: building a context per connection would cost the client more than the proxy's whole share. */
  readonly context: tls.SecureContext
}

export function makeClient(caPem: string): Client {
  return { context: tls.createSecureContext({ ca: caPem }) }
}

function connectTls(c: Client, port: number): tls.TLSSocket {
  const s = tls.connect({ host: HOST, port, servername: SERVERNAME, secureContext: c.context, rejectUnauthorized: true })
  s.setTimeout(SOCKET_TIMEOUT_MS, () => s.destroy(new Error('socket timeout')))
  return s
}

function checkSmall(resp: Buffer): string | null {
  const text = resp.toString('latin1')
  if (!text.startsWith('HTTP/1.1 200')) return `bad status: ${JSON.stringify(text.slice(0, 40))}`
  if (!text.endsWith(SMALL_BODY)) return `bad body: ${JSON.stringify(text.slice(-40))}`
  return null
}

/**
 * One new connection: full handshake, GET /small, read to the close. Resolves with the
 * time from connect() to the first response byte in ms.
 */
export function smallRequest(c: Client, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    let ttfb = -1
    const chunks: Buffer[] = []
    const s = connectTls(c, port)
    s.once('secureConnect', () => {
      if (s.isSessionReused()) return void s.destroy(new Error('TLS session was resumed; every connection must do a full handshake'))
      s.write(REQ_SMALL)
    })
    s.on('data', (d: Buffer) => {
      if (ttfb < 0) ttfb = performance.now() - t0
      chunks.push(d)
    })
    s.once('error', reject)
    s.once('end', () => {
      const bad = checkSmall(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
      if (bad) reject(new Error(bad))
      else resolve(ttfb)
    })
    // A close with neither end nor error (a bare FIN during the handshake) must still settle.
    s.once('close', () => reject(new Error('closed before the response ended')))
  })
}

export interface LoopResult {
  ok: number
  errors: number
  elapsedMs: number
  firstError: string | null
}

/** Closed loop: `concurrency` clients each doing smallRequest back to back until time or count runs out. */
export async function newConnections(c: Client, port: number, concurrency: number, durationMs: number, maxCount: number): Promise<LoopResult> {
  const r: LoopResult = { ok: 0, errors: 0, elapsedMs: 0, firstError: null }
  const t0 = performance.now()
  const deadline = t0 + durationMs
  let started = 0
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline && started < maxCount) {
      started++
      try {
        await smallRequest(c, port)
        r.ok++
      } catch (e) {
        r.errors++
        r.firstError ??= (e as Error).message
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  r.elapsedMs = performance.now() - t0
  return r
}

export interface PacedResult extends LoopResult {
  /** Time to first byte of every successful connection, ms, in completion order. */
  ttfbMs: Float64Array
  /** Connections that were due while `maxInFlight` were already open (the target fell behind). */
  skipped: number
}

/**
 * Open loop at `rate` new connections per second in all, dealt round-robin over `ports`
 * (connection k goes to ports[k mod n]): the latency seen at a given load, not the
 * latency of a saturated queue. Interleaving the targets connection by connection puts
 * every burst of the machine's noise (another tenant, a GC in this process) on all of
 * them alike, where one target after another compared different minutes. `maxInFlight`
 * bounds each port's open connections.
 */
export function paced(c: Client, ports: readonly number[], rate: number, durationMs: number, maxInFlight: number): Promise<PacedResult[]> {
  const total = Math.max(ports.length, Math.floor((rate * durationMs) / 1000))
  const results: PacedResult[] = ports.map(() => ({
    ok: 0, errors: 0, elapsedMs: 0, firstError: null, ttfbMs: new Float64Array(Math.ceil(total / ports.length)), skipped: 0,
  }))
  const inFlight = ports.map(() => 0)
  const interval = 1000 / rate
  const t0 = performance.now()
  let launched = 0
  let open = 0
  return new Promise((resolve) => {
    const finishIfDone = (): void => {
      if (launched === total && open === 0) {
        const elapsed = performance.now() - t0
        for (const r of results) {
          r.elapsedMs = elapsed
          r.ttfbMs = r.ttfbMs.subarray(0, r.ok)
        }
        resolve(results)
      }
    }
    const tick = (): void => {
      const now = performance.now()
      while (launched < total && t0 + launched * interval <= now) {
        const i = launched % ports.length
        const r = results[i]!
        launched++
        if (inFlight[i]! >= maxInFlight) {
          r.skipped++
          continue
        }
        inFlight[i]!++
        open++
        smallRequest(c, ports[i]!).then((ttfb) => {
          r.ttfbMs[r.ok++] = ttfb
        }, (e: Error) => {
          r.errors++
          r.firstError ??= e.message
        }).finally(() => {
          inFlight[i]!--
          open--
          finishIfDone()
        })
      }
      if (launched < total) setTimeout(tick, Math.max(0, t0 + launched * interval - performance.now()))
      else finishIfDone()
    }
    tick()
  })
}

export interface BulkResult {
  bytes: number
  /** From the request write to the last body byte: the handshake is not in it. */
  ms: number
}

/** GET /big on a new connection; every body byte is compared with `expected`. */
export function bulk(c: Client, port: number, expected: Buffer): Promise<BulkResult> {
  return new Promise((resolve, reject) => {
    let t0 = 0
    let head: Buffer | null = Buffer.alloc(0)
    let bodyOff = 0
    let length = -1
    const s = connectTls(c, port)
    const fail = (msg: string): void => void s.destroy(new Error(msg))
    s.once('secureConnect', () => {
      t0 = performance.now()
      s.write(REQ_BIG)
    })
    s.on('data', (d: Buffer) => {
      if (head !== null) {
        head = Buffer.concat([head, d])
        const end = head.indexOf('\r\n\r\n')
        if (end < 0) return head.length > 8192 ? fail('response head too long') : undefined
        const text = head.toString('latin1', 0, end)
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(text)
        if (!text.startsWith('HTTP/1.1 200') || !m) return fail(`bad response head: ${JSON.stringify(text.slice(0, 80))}`)
        length = Number(m[1])
        if (length !== expected.length) return fail(`content-length ${length}, expected ${expected.length}`)
        d = head.subarray(end + 4)
        head = null
      }
      if (bodyOff + d.length > length) return fail('more body than content-length')
      if (d.compare(expected, bodyOff, bodyOff + d.length) !== 0) return fail(`body differs in [${bodyOff}, ${bodyOff + d.length})`)
      bodyOff += d.length
      if (bodyOff === length) {
        const ms = performance.now() - t0
        s.destroy()
        resolve({ bytes: length, ms })
      }
    })
    s.once('error', reject)
    s.once('close', () => reject(new Error(`closed after ${bodyOff} of ${length} body bytes`)))
  })
}

/** A real ClientHello for `servername`, captured from Node's TLS client. */
export function captureHello(servername: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((sock) => {
      let buf = Buffer.alloc(0)
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d])
        if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
          sock.destroy()
          server.close()
          resolve(buf.subarray(0, 5 + buf.readUInt16BE(3)))
        }
      })
      sock.on('error', () => {})
    })
    server.listen(0, HOST, () => {
      const port = (server.address() as net.AddressInfo).port
      const s = tls.connect({ host: HOST, port, servername, rejectUnauthorized: false })
      s.on('error', () => {})
      setTimeout(() => reject(new Error('no ClientHello captured')), 5000).unref()
    })
  })
}

export type BlockedOutcome = 'reset' | 'alert' | 'fin' | 'timeout' | 'data' | 'connect_error'

/** connect, send `hello`, wait for the target to close; how it closed. */
export function blockedOnce(port: number, hello: Buffer): Promise<BlockedOutcome> {
  return new Promise((resolve) => {
    let outcome: BlockedOutcome = 'fin'
    let connected = false
    const s = net.connect({ host: HOST, port })
    s.setTimeout(SOCKET_TIMEOUT_MS, () => {
      outcome = 'timeout'
      s.destroy()
    })
    s.once('connect', () => {
      connected = true
      s.write(hello)
    })
    s.on('data', (d: Buffer) => {
      // A TLS alert record (content type 21) is a defined answer; anything else is not.
      outcome = d[0] === 21 ? 'alert' : 'data'
      s.end()
    })
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (!connected) outcome = 'connect_error'
      else if (e.code === 'ECONNRESET' || e.code === 'EPIPE') outcome = outcome === 'alert' ? 'alert' : 'reset'
    })
    s.once('close', () => resolve(outcome))
  })
}

export interface BlockedResult {
  elapsedMs: number
  outcomes: Record<BlockedOutcome, number>
}

export async function blockedLoop(port: number, hello: Buffer, concurrency: number, durationMs: number, maxCount: number): Promise<BlockedResult> {
  const outcomes: Record<BlockedOutcome, number> = { reset: 0, alert: 0, fin: 0, timeout: 0, data: 0, connect_error: 0 }
  const t0 = performance.now()
  const deadline = t0 + durationMs
  let started = 0
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline && started < maxCount) {
      started++
      outcomes[await blockedOnce(port, hello)]++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { elapsedMs: performance.now() - t0, outcomes }
}

export interface IdleSet {
  sockets: tls.TLSSocket[]
  errors: number
  firstError: string | null
  /** Sockets that closed while they should have been held. */
  closedEarly: () => number
  openMs: number
  /** Called before closing them: closes after that are expected. */
  release(): void
}

/** Opens `n` TLS connections (handshake done, nothing sent) and keeps them. */
export async function openIdle(c: Client, port: number, n: number, concurrency: number): Promise<IdleSet> {
  const sockets: tls.TLSSocket[] = []
  let closedEarly = 0
  let holding = true
  let errors = 0
  let firstError: string | null = null
  let next = 0
  const t0 = performance.now()
  const one = (): Promise<void> => new Promise((resolve) => {
    const s = tls.connect({ host: HOST, port, servername: SERVERNAME, secureContext: c.context, rejectUnauthorized: true })
    s.setTimeout(SOCKET_TIMEOUT_MS, () => s.destroy(new Error('handshake timeout')))
    let established = false
    s.once('secureConnect', () => {
      established = true
      s.setTimeout(0)
      sockets.push(s)
      s.once('close', () => {
        if (holding) closedEarly++
      })
      resolve()
    })
    let failed = false
    const fail = (why: string): void => {
      if (established || failed) return
      failed = true
      errors++
      firstError ??= why
      resolve()
    }
    s.on('error', (e) => fail(e.message))
    s.once('close', () => fail('closed during the handshake'))
  })
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++
      await one()
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return {
    sockets, errors, firstError, closedEarly: () => closedEarly, openMs: performance.now() - t0,
    release: () => void (holding = false),
  }
}

/** Sends GET /small (keep-alive) on `sample` of the held sockets; how many answered correctly. */
export async function probeIdle(set: IdleSet, sample: number): Promise<{ probed: number; ok: number }> {
  const step = Math.max(1, Math.floor(set.sockets.length / sample))
  const picks: tls.TLSSocket[] = []
  for (let i = 0; i < set.sockets.length && picks.length < sample; i += step) picks.push(set.sockets[i]!)
  const results = await Promise.all(picks.map((s) => new Promise<boolean>((resolve) => {
    let got = ''
    const timer = setTimeout(() => (s.off('data', onData), resolve(false)), 5000)
    const onData = (d: Buffer): void => {
      got += d.toString('latin1')
      if (got.endsWith(SMALL_BODY)) {
        clearTimeout(timer)
        s.off('data', onData)
        resolve(got.startsWith('HTTP/1.1 200'))
      }
    }
    s.on('data', onData)
    s.write(REQ_SMALL_KEEPALIVE)
  })))
  return { probed: picks.length, ok: results.filter(Boolean).length }
}

export async function closeIdle(set: IdleSet): Promise<void> {
  set.release()
  await Promise.all(set.sockets.map((s) => new Promise<void>((resolve) => {
    if (s.destroyed) return resolve()
    s.once('close', () => resolve())
    s.destroy()
  })))
}
