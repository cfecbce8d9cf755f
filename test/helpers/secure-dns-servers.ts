/**
 * Misbehaving DNS over TLS and DNS over HTTPS servers for the cases a real unbound does
 * not produce on demand: answers out of order, a connection closed mid-pipeline, an
 * HTTP/2 GOAWAY, HTTP errors. Both answer `qN.<zone>` with A 192.0.2.N (TTL 300), so a
 * test can tell which answer went to which query.
 */
import http2 from 'node:http2'
import net from 'node:net'
import tls from 'node:tls'
import dnsPacket from 'dns-packet'

export function answerFor(query: Buffer): Buffer {
  const q = dnsPacket.decode(query)
  const name = q.questions![0]!.name
  const n = Number(/^q([0-9]+)\./.exec(name)?.[1] ?? 1)
  return dnsPacket.encode({
    type: 'response',
    id: q.id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: q.questions,
    answers: q.questions![0]!.type === 'A' ? [{ name, type: 'A', ttl: 300, data: `192.0.2.${n % 256}` }] : [],
  })
}

export type DotMode =
  /** Every query answered at once. */
  | 'normal'
  /** Queries held until `batch` have come on the connection, then answered last first. */
  | 'reverse'
  /** The first connection is closed, unanswered, once `batch` queries have come; later ones are normal. */
  | 'close-first'
  /** Every connection is closed, unanswered, once `batch` queries have come. */
  | 'close-always'

export interface FakeDot {
  readonly port: number
  /** Connections accepted (TCP), and TLS handshakes completed. */
  readonly accepted: number
  readonly handshakes: number
  readonly queries: number
  /** The length of each query message received, in order. */
  readonly lengths: number[]
  mode: DotMode
  close(): Promise<void>
}

export async function fakeDot(cert: { cert: string; key: string }, mode: DotMode, batch = 3): Promise<FakeDot> {
  const sockets = new Set<net.Socket>()
  let connIndex = 0
  // The counters live on the returned object itself: the test reads what the server counts.
  const f = {
    port: 0, accepted: 0, handshakes: 0, queries: 0, lengths: [] as number[], mode,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
  const server = tls.createServer({ ...cert, ALPNProtocols: ['dot'] }, (sock) => {
    f.handshakes++
    const index = connIndex++
    let buf = Buffer.alloc(0)
    const held: Buffer[] = []
    sock.on('error', () => {})
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0))
        buf = buf.subarray(2 + msg.length)
        f.queries++
        f.lengths.push(msg.length)
        held.push(Buffer.from(msg))
        const m = f.mode
        if (m === 'normal' || (m === 'close-first' && index > 0)) {
          for (const q of held.splice(0)) write(q)
        } else if (held.length >= batch) {
          if (m === 'reverse') for (const q of held.splice(0).reverse()) write(q)
          else sock.destroy()
        }
      }
    })
    const write = (q: Buffer) => {
      const a = answerFor(q)
      const len = Buffer.alloc(2)
      len.writeUInt16BE(a.length)
      sock.write(Buffer.concat([len, a]))
    }
  })
  server.on('connection', (s: net.Socket) => {
    f.accepted++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  server.on('tlsClientError', () => {})
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  f.port = (server.address() as net.AddressInfo).port
  return f
}

export type DohMode =
  | 'normal'
  /** Answers, then sends GOAWAY (graceful, last stream = this one): the next query needs a new session. */
  | 'goaway-after-answer'
  /** On the first session, the first request gets a GOAWAY whose last stream ID is below it (refused); later sessions normal. */
  | 'goaway-refuse-first'
  /** Status 500. */
  | 'http-500'
  /** 200 with content type text/html. */
  | 'wrong-type'

export interface FakeDoh {
  readonly port: number
  readonly sessions: number
  readonly requests: number
  /** Streams the client reset (RST_STREAM) rather than ending them. */
  readonly resets: number
  /** Methods, paths, content types and body lengths of the requests. */
  readonly seen: { method: string; path: string; contentType: string; length?: number }[]
  mode: DohMode
  close(): Promise<void>
}

export async function fakeDoh(cert: { cert: string; key: string }, mode: DohMode): Promise<FakeDoh> {
  const live = new Set<http2.ServerHttp2Session>()
  const f = {
    port: 0, sessions: 0, requests: 0, resets: 0, seen: [] as FakeDoh['seen'][number][], mode,
    async close() {
      for (const s of live) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
  const server = http2.createSecureServer({ ...cert, allowHTTP1: false })
  server.on('session', (s) => {
    f.sessions++
    live.add(s)
    s.on('close', () => live.delete(s))
    s.on('error', () => {})
  })
  server.on('stream', (stream, headers) => {
    f.requests++
    const request: FakeDoh['seen'][number] = { method: String(headers[':method']), path: String(headers[':path']), contentType: String(headers['content-type']) }
    f.seen.push(request)
    const chunks: Buffer[] = []
    stream.on('error', () => {})
    stream.on('close', () => {
      if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) f.resets++
    })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      const m = f.mode
      const session = stream.session!
      if (m === 'goaway-refuse-first' && f.sessions === 1) {
        // Last stream ID 0: this stream (ID 1) was never processed; the client may retry it elsewhere.
        session.goaway(http2.constants.NGHTTP2_NO_ERROR, 0)
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)
        return
      }
      if (m === 'http-500') {
        stream.respond({ ':status': 500 })
        stream.end()
        return
      }
      request.length = Buffer.concat(chunks).length
      const body = answerFor(Buffer.concat(chunks))
      stream.respond({ ':status': 200, 'content-type': m === 'wrong-type' ? 'text/html' : 'application/dns-message', 'cache-control': 'max-age=0, no-store' })
      stream.end(body)
      if (m === 'goaway-after-answer') session.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id!)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  f.port = (server.address() as net.AddressInfo).port
  return f
}
