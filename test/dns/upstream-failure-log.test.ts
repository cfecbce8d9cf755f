// An allowed query that gets SERVFAIL because no upstream answered usably is logged: one
// warn line (under the 20/s event limiter) naming every try, its transport and the system's
// reason, so an upstream whose TCP is filtered reads as such instead of as silence.
import t from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import { parseDecision } from '../../src/log/decision.js'
import { allow, decode, edes, fakeUpstream, makeConfig, metric, query, standardZone, startService, tcpClient, udpExchange } from './helpers.js'

const rcodeOf = (b: Buffer | null) => (b === null ? null : (decode(b) as { rcode?: string }).rcode)

const flush = () => new Promise((r) => setTimeout(r, 20))

/** A loopback port with nothing listening on TCP (bound, then closed). */
async function closedTcpPort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** A UDP socket that reads queries and never answers. */
async function silentUdp(): Promise<{ port: number; received: () => number; close(): void }> {
  const sock = dgram.createSocket('udp4')
  let n = 0
  sock.on('message', () => n++)
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve))
  return { port: sock.address().port, received: () => n, close: () => sock.close() }
}

/** A UDP-only upstream that answers every query with TC set (header + question), so resolvers retry over TCP. */
async function truncatingUdp(port = 0): Promise<{ port: number; close(): void }> {
  const sock = dgram.createSocket('udp4')
  sock.on('message', (msg, rinfo) => {
    const reply = Buffer.from(msg)
    reply[2] = 0x80 | 0x02 | (msg[2]! & 0x01) // QR, TC, RD as asked
    reply[3] = 0x80 // RA, NOERROR
    reply.writeUInt16BE(0, 6)
    reply.writeUInt16BE(0, 8)
    reply.writeUInt16BE(0, 10)
    sock.send(reply.subarray(0, msg.length), rinfo.port, rinfo.address)
  })
  await new Promise<void>((resolve) => sock.bind(port, '127.0.0.1', resolve))
  return { port: sock.address().port, close: () => sock.close() }
}

const upstreamLines = (logs: Record<string, unknown>[]) => logs.filter((l) => l.verdict === 'timeout' || l.verdict === 'upstream_error')

t.test('every UDP try timed out: SERVFAIL + EDE 22, a warn line with verdict timeout and the try', async (t) => {
  const silent = await silentUdp()
  t.teardown(() => silent.close())
  const s = await startService(makeConfig({ upstreams: [{ host: '127.0.0.1', port: silent.port, family: 4 }], upstreamTimeoutMs: 150 }, allow('*.allowed.example')))
  t.teardown(() => s.close())
  const reply = await udpExchange(s.port, query('x.allowed.example', 'A', { edns: true }))
  t.equal(rcodeOf(reply), 'SERVFAIL')
  t.same(edes(reply!).map((e) => e.code), [22], 'EDE 22 No Reachable Authority')
  await flush()
  const lines = upstreamLines(s.logs)
  t.equal(lines.length, 1)
  t.match(lines[0], {
    level: 40, msg: 'dns upstreams timed out', protocol: 'dns', client: '127.0.0.1', name: 'x.allowed.example', type: 'A',
    verdict: 'timeout', rule: '*.allowed.example', reason: 'timeout', group: 'default', mode: 'enforce',
  })
  t.same(lines[0]!.upstreams, [{ upstream: `127.0.0.1:${silent.port}`, transport: 'udp', reason: 'timeout', error: `upstream 127.0.0.1:${silent.port} timed out` }])
  t.same(parseDecision(lines[0])?.upstreams, lines[0]!.upstreams, 'the line parses back with its tries')
  t.equal(silent.received(), 1)
})

t.test('a truncated UDP answer retried over TCP, and TCP refused: the line says tcp and ECONNREFUSED', async (t) => {
  const tcpPort = await closedTcpPort()
  const tc = await truncatingUdp(tcpPort)
  t.teardown(() => tc.close())
  const s = await startService(makeConfig({ upstreams: [{ host: '127.0.0.1', port: tc.port, family: 4 }] }, allow('*.allowed.example')))
  t.teardown(() => s.close())
  const reply = await udpExchange(s.port, query('big.allowed.example', 'TXT'))
  t.equal(rcodeOf(reply), 'SERVFAIL')
  await flush()
  const [line, ...rest] = upstreamLines(s.logs)
  t.equal(rest.length, 0)
  t.match(line, { level: 40, msg: 'dns upstreams failed', verdict: 'upstream_error', reason: 'tcp', name: 'big.allowed.example', type: 'TXT' })
  t.match(line!.upstreams, [{ upstream: `127.0.0.1:${tc.port}`, transport: 'tcp', reason: 'tcp', error: /\(tcp\): connect ECONNREFUSED/ }])
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', 'reason="truncated"'), 1)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', 'reason="tcp"'), 1)
})

t.test('asked over TCP: the TCP try to a closed port is logged; two upstreams are named in order', async (t) => {
  const up = await fakeUpstream(standardZone)
  t.teardown(() => up.close())
  const closed = await closedTcpPort()
  const s = await startService(
    makeConfig({ upstreams: [{ host: '127.0.0.1', port: closed, family: 4 }, up.hostPort] }, allow('*.allowed.example')),
  )
  t.teardown(() => s.close())
  const c = await tcpClient(s.port)
  t.teardown(() => c.sock.destroy())
  c.send(query('servfail.allowed.example', 'A'))
  const reply = await c.next()
  t.equal(rcodeOf(reply), 'SERVFAIL')
  await flush()
  const [line] = upstreamLines(s.logs)
  t.match(line, { verdict: 'upstream_error', reason: 'servfail', name: 'servfail.allowed.example' })
  t.match(line!.upstreams, [
    { upstream: `127.0.0.1:${closed}`, transport: 'tcp', reason: 'tcp', error: /ECONNREFUSED/ },
    { upstream: `127.0.0.1:${up.port}`, transport: 'tcp', reason: 'servfail', error: /RCODE 2/ },
  ])
})

t.test('an upstream outage is logged at most 20 lines a second; the rest are counted as suppressed', async (t) => {
  const up = await fakeUpstream(() => ({ flags: 2, answers: [] }))
  t.teardown(() => up.close())
  const s = await startService(makeConfig({ upstreams: [up.hostPort] }, allow('*.allowed.example')))
  t.teardown(() => s.close())
  const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => udpExchange(s.port, query(`n${i}.allowed.example`, 'A'))))
  t.equal(replies.filter((r) => rcodeOf(r) === 'SERVFAIL').length, 60, 'every query answered SERVFAIL')
  await flush()
  const lines = upstreamLines(s.logs).length
  // One-second windows: 60 queries answered within ~100 ms may straddle two windows.
  t.ok(lines >= 20 && lines <= 40, `${lines} lines`)
  t.equal(s.svc.takeSuppressedLogLines(), 60 - lines, 'what the limiter held back is counted')
})
