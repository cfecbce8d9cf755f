/**
 * A minimal authoritative responder for the DNS benchmark: every well-formed query is
 * answered NOERROR with the question copied and one A (or AAAA) record appended, so the
 * servers under test always have a fast, deterministic upstream. It runs as its own
 * process (pinned by the caller) so its cost never lands on the server's core.
 *
 * `node build/bench/dns/fake-upstream.js [--port N] [--host 127.0.0.1] [--nxdomain]` prints
 * one JSON line `{"ready":true,"port":N}` once bound and, on SIGTERM, one line of counters.
 * With `--nxdomain` it answers every query NXDOMAIN instead: the benchmark pins it where
 * the servers run, as the floor of any Node server built on dgram (receive, copy, send).
 */
import { createSocket, type RemoteInfo } from 'node:dgram'

const HEADER = 12
/** Longest answer we build: a 255-byte question, an AAAA record, an OPT record. */
const MAX_ANSWER = HEADER + 255 + 4 + 28 + 11
const TYPE_A = 1
const TYPE_AAAA = 28
const TYPE_OPT = 41
/** Long enough that a cache-hit run never sees an entry expire. */
export const ANSWER_TTL = 3600
/** TEST-NET-2 and the IPv6 documentation prefix: public for rebind checks, routable nowhere. */
export const ANSWER_A = [198, 51, 100, 7] as const
export const ANSWER_AAAA = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7] as const

/**
 * Writes the answer to `query` into `out` (at least MAX_ANSWER bytes) and returns its
 * length, or 0 when the query is not one we answer (a response, not QUERY, not exactly one
 * question, a malformed or compressed name): the caller drops those, as an authoritative
 * server under attack would rather than spend a reply.
 */
export function answerInto(query: Uint8Array, out: Uint8Array, nxdomain = false): number {
  const len = query.length
  if (len < HEADER + 5) return 0
  const flags1 = query[2]!
  if ((flags1 & 0x80) !== 0 || (flags1 & 0x78) !== 0) return 0
  if (query[4] !== 0 || query[5] !== 1) return 0
  let p = HEADER
  for (;;) {
    if (p >= len) return 0
    const l = query[p]!
    if (l === 0) break
    if (l > 63) return 0
    p += l + 1
  }
  p += 1
  if (p + 4 > len || p - HEADER > 255) return 0
  const qtype = (query[p]! << 8) | query[p + 1]!
  const qend = p + 4
  const hasOpt = ((query[10]! << 8) | query[11]!) > 0 && qend + 11 <= len && query[qend] === 0 &&
    ((query[qend + 1]! << 8) | query[qend + 2]!) === TYPE_OPT

  out.set(query.subarray(0, qend), 0)
  // QR, AA, keep opcode and RD; RA set, rcode NOERROR.
  out[2] = 0x80 | 0x04 | (flags1 & 0x01)
  out[3] = nxdomain ? 0x83 : 0x80
  const rdata = nxdomain ? null : qtype === TYPE_A ? ANSWER_A : qtype === TYPE_AAAA ? ANSWER_AAAA : null
  out[6] = 0
  out[7] = rdata ? 1 : 0
  out[8] = 0
  out[9] = 0
  out[10] = 0
  out[11] = hasOpt ? 1 : 0
  let w = qend
  if (rdata) {
    out[w++] = 0xc0 // pointer to the question name at offset 12
    out[w++] = HEADER
    out[w++] = qtype >> 8
    out[w++] = qtype & 0xff
    out[w++] = 0
    out[w++] = 1
    out[w++] = (ANSWER_TTL >>> 24) & 0xff
    out[w++] = (ANSWER_TTL >>> 16) & 0xff
    out[w++] = (ANSWER_TTL >>> 8) & 0xff
    out[w++] = ANSWER_TTL & 0xff
    out[w++] = 0
    out[w++] = rdata.length
    for (let i = 0; i < rdata.length; i++) out[w++] = rdata[i]!
  }
  if (hasOpt) {
    // root name, OPT, payload 1232, no extended rcode or flags, no options
    out[w++] = 0
    out[w++] = 0
    out[w++] = TYPE_OPT
    out[w++] = 0x04
    out[w++] = 0xd0
    for (let i = 0; i < 6; i++) out[w++] = 0
  }
  return w
}

export interface FakeUpstreamStats {
  answered: number
  dropped: number
}

/** Binds the responder; resolves with the bound port and a stop function. */
export function startFakeUpstream(
  host = '127.0.0.1',
  port = 0,
  nxdomain = false,
): Promise<{ port: number; stats: FakeUpstreamStats; stop(): Promise<void> }> {
  const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  const stats: FakeUpstreamStats = { answered: 0, dropped: 0 }
  // One scratch buffer for building; each reply is copied into a pooled Buffer because
  // dgram may keep a reference until the send completes.
  const scratch = new Uint8Array(MAX_ANSWER)
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    const n = answerInto(msg, scratch, nxdomain)
    if (n === 0) {
      stats.dropped++
      return
    }
    const reply = Buffer.allocUnsafe(n)
    reply.set(scratch.subarray(0, n))
    socket.send(reply, rinfo.port, rinfo.address)
    stats.answered++
  })
  // A send error (client port gone) must not end the responder.
  socket.on('error', () => {})
  return new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.bind(port, host, () => {
      socket.off('error', reject)
      resolve({
        port: socket.address().port,
        stats,
        stop: () => new Promise<void>((r) => socket.close(() => r())),
      })
    })
  })
}

function flag(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2)
  const up = await startFakeUpstream(flag(args, '--host', '127.0.0.1'), Number(flag(args, '--port', '0')), args.includes('--nxdomain'))
  process.stdout.write(JSON.stringify({ ready: true, port: up.port }) + '\n')
  const finish = (): void => {
    process.stdout.write(JSON.stringify(up.stats) + '\n', () => process.exit(0))
  }
  process.on('SIGTERM', finish)
  process.on('SIGINT', finish)
  // Bounded: a responder orphaned by a crashed benchmark exits on its own.
  const maxSeconds = Number(flag(args, '--max-seconds', '900'))
  setTimeout(finish, maxSeconds * 1000).unref()
  // With a piped stdin, its end means the parent benchmark is gone.
  if (args.includes('--exit-on-stdin-end')) process.stdin.on('end', finish).resume()
}
