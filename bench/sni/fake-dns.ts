/**
 * The upstream resolver egressd is pointed at: a raw dgram responder that answers
 * `bench.example A` with 127.0.0.1, `bench.example AAAA` with no records, and NXDOMAIN
 * for anything else. Malformed datagrams are dropped and counted.
 */
import { createSocket, type Socket } from 'node:dgram'

export interface FakeDns {
  readonly port: number
  readonly stats: { answered: number; nxdomain: number; dropped: number }
  close(): Promise<void>
}

const TYPE_A = 1
const TYPE_SOA = 6

/** Authority record: `<question name> SOA . . 1 3600 600 86400 3600`, TTL 3600. */
const SOA = (() => {
  const b = Buffer.alloc(12 + 2 + 20)
  b.writeUInt16BE(0xc00c, 0)
  b.writeUInt16BE(TYPE_SOA, 2)
  b.writeUInt16BE(1, 4)
  b.writeUInt32BE(3600, 6)
  b.writeUInt16BE(2 + 20, 10)
  // MNAME and RNAME are the root (one zero byte each), then serial, refresh, retry, expire, minimum.
  b[12] = 0
  b[13] = 0
  let o = 14
  for (const v of [1, 3600, 600, 86400, 3600]) (b.writeUInt32BE(v, o), (o += 4))
  return b
})()

/** The question's name (lower case) and type, `end` just past QCLASS; null when unreadable. */
function readQuestion(msg: Buffer): { name: string; qtype: number; end: number } | null {
  if (msg.length < 17 || msg.readUInt16BE(4) !== 1) return null
  let off = 12
  const labels: string[] = []
  for (;;) {
    if (off >= msg.length) return null
    const len = msg[off]!
    if (len === 0) break
    if (len > 63 || off + 1 + len > msg.length) return null
    labels.push(msg.toString('latin1', off + 1, off + 1 + len).toLowerCase())
    off += 1 + len
  }
  off += 1
  if (off + 4 > msg.length) return null
  return { name: labels.join('.'), qtype: msg.readUInt16BE(off), end: off + 4 }
}

export function startFakeDns(name: string, address: string, ttl: number): Promise<FakeDns> {
  const stats = { answered: 0, nxdomain: 0, dropped: 0 }
  const ip = address.split('.').map(Number)
  const sock: Socket = createSocket('udp4')
  sock.on('message', (msg, rinfo) => {
    const q = readQuestion(msg)
    if (!q || (msg[2]! & 0x80) !== 0) return void stats.dropped++
    const known = q.name === name
    // AAAA and other types of the known name: NOERROR with no records (NODATA).
    const withA = known && q.qtype === TYPE_A
    // Header + question copied from the query; additional records (EDNS OPT) dropped.
    const out = Buffer.alloc(q.end + (withA ? 16 : SOA.length))
    msg.copy(out, 0, 0, q.end)
    out[2] = 0x80 | (msg[2]! & 0x79) // QR, opcode and RD kept, AA/TC cleared
    out[3] = 0x80 | (known ? 0 : 3) // RA; NOERROR or NXDOMAIN
    out.writeUInt16BE(withA ? 1 : 0, 6)
    out.writeUInt16BE(withA ? 0 : 1, 8)
    out.writeUInt16BE(0, 10)
    // Negative answers carry an SOA so that they are cached (RFC 2308) like a real upstream's.
    if (!withA) SOA.copy(out, q.end)
    if (withA) {
      let o = q.end
      out.writeUInt16BE(0xc00c, o) // pointer to the question name
      out.writeUInt16BE(TYPE_A, o + 2)
      out.writeUInt16BE(1, o + 4)
      out.writeUInt32BE(ttl, o + 6)
      out.writeUInt16BE(4, o + 10)
      o += 12
      for (let i = 0; i < 4; i++) out[o + i] = ip[i]!
    }
    if (known) stats.answered++
    else stats.nxdomain++
    sock.send(out, rinfo.port, rinfo.address)
  })
  return new Promise((resolve, reject) => {
    sock.once('error', reject)
    sock.bind(0, '127.0.0.1', () => {
      sock.removeListener('error', reject)
      resolve({
        port: sock.address().port,
        stats,
        close: () => new Promise((r) => sock.close(() => r())),
      })
    })
  })
}
