/** Hostile input against a live DnsService: malformed datagrams, TCP abuse, limits. */
import t from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import { decode, fakeUpstream, rawHeader, makeConfig, metric, query, STANDARD_POLICY, standardZone, startService, tcpClient, udpExchange } from './helpers.js'
import { prng } from '../helpers/prng.js'

const up = await fakeUpstream(standardZone)
t.teardown(() => up.close())
const s = await startService(makeConfig({ upstreams: [up.hostPort], tcpIdleTimeoutMs: 300, maxTcpConnections: 4 }, STANDARD_POLICY))
t.teardown(() => s.close())
const port = s.port

const header = (flags: number, counts: [number, number, number, number], rest: number[] = []): Buffer => rawHeader(0xabcd, flags, counts, rest)

const Q = [1, 0x61, 0, 0, 1, 0, 1]
const label = (n: number) => [n, ...Buffer.alloc(n, 0x61)]
const rcodeOf = (b: Buffer | null) => (b === null ? 'silence' : b.length < 12 ? 'short' : String(b[3]! & 0x0f))

t.test('malformed corpus gets FORMERR/NOTIMP or silence, then a good query is answered', async (t) => {
  const cases: [string, Buffer, string][] = [
    ['empty', Buffer.alloc(0), 'silence'],
    ['11 bytes', Buffer.alloc(11), 'silence'],
    ['QR set (never answer a response)', header(0x8000, [1, 0, 0, 0], Q), 'silence'],
    ['QDCOUNT 0', header(0, [0, 0, 0, 0]), '1'],
    ['QDCOUNT 2', header(0, [2, 0, 0, 0], [...Q, ...Q]), '1'],
    ['pointer in question', header(0, [1, 0, 0, 0], [0xc0, 12, 0, 1, 0, 1]), '1'],
    ['label 64', header(0, [1, 0, 0, 0], [...label(64), 0, 0, 1, 0, 1]), '1'],
    ['name > 255', header(0, [1, 0, 0, 0], [...label(63), ...label(63), ...label(63), ...label(63), 0, 0, 1, 0, 1]), '1'],
    ['truncated question', header(0, [1, 0, 0, 0], [3, 0x61]), '1'],
    ['opcode 2 (STATUS)', header(0x1000, [1, 0, 0, 0], Q), '4'],
    ['every count 0xFFFF', header(0, [0xffff, 0xffff, 0xffff, 0xffff]), '1'],
    ['ARCOUNT 0xFFFF', header(0, [1, 0, 0, 0xffff], Q), '1'],
  ]
  for (const [name, msg, want] of cases) {
    const reply = await udpExchange(port, msg, want === 'silence' ? 300 : 1500)
    t.equal(rcodeOf(reply), want, name)
    if (reply !== null && reply.length >= 12) {
      t.equal(reply.readUInt16BE(0), 0xabcd, `${name}: ID echoed`)
      t.equal(reply.length, 12, `${name}: header only`)
    }
  }
  t.ok((await metric(s.registry, 'egressd_dns_queries_total', 'verdict="malformed"')) >= cases.length)
  t.equal(await metric(s.registry, 'egressd_dns_dropped_total', 'reason="short"'), 2)
  t.equal(await metric(s.registry, 'egressd_dns_dropped_total', 'reason="response"'), 1)
  const good = decode((await udpExchange(port, query('allowed.example', 'A')))!)
  t.equal(good.answers!.length, 1)
})

t.test('2000 seeded random datagrams, then the server still answers', async (t) => {
  const seed = 20240611
  t.comment(`seed ${seed}`)
  const rand = prng(seed)
  const sock = dgram.createSocket('udp4')
  let replies = 0
  let kinds = new Set<string>()
  sock.on('message', (m) => {
    replies++
    kinds.add(rcodeOf(m))
  })
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rand() * 80)
    const b = Buffer.alloc(len)
    for (let j = 0; j < len; j++) b[j] = Math.floor(rand() * 256)
    // Half of them get a plausible header so the question/RR parser is exercised too.
    if (i % 2 === 0 && len >= 12) {
      b[2] = b[2]! & 0x07
      b[4] = 0
      b[5] = 1
    }
    sock.send(b, port, '127.0.0.1')
    // Paced: the server shares this event loop, and libuv reads 32 datagrams per turn;
    // faster and the kernel drops the overflow, which would test the kernel, not us.
    if (i % 16 === 15) await new Promise((r) => setTimeout(r, 1))
  }
  await new Promise((r) => setTimeout(r, 100))
  const good = decode((await udpExchange(port, query('allowed.example', 'A', { id: 77 })))!)
  t.equal(good.id, 77)
  t.equal(good.answers!.length, 1)
  await new Promise((r) => setTimeout(r, 100))
  sock.close()
  t.ok(replies > 0, `${replies} replies to garbage`)
  t.ok(kinds.has('1'), 'FORMERR seen: the parser was reached')
  t.ok(kinds.has('4'), 'NOTIMP seen')
  kinds = new Set()
})

t.test('TCP: a frame shorter than a header closes the connection', async (t) => {
  const c = await tcpClient(port)
  c.sock.write(Buffer.from([0, 3, 1, 2, 3]))
  await c.closed
  t.pass('closed')
  t.ok((await metric(s.registry, 'egressd_dns_tcp_closed_total', 'reason="garbage"')) >= 1)
})

t.test('TCP: a length larger than the data, and an idle connection, are closed by the idle timeout', async (t) => {
  const before = await metric(s.registry, 'egressd_dns_tcp_closed_total', 'reason="idle"')
  const partial = await tcpClient(port)
  partial.sock.write(Buffer.from([0x01, 0xf4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])) // says 500, sends 10
  const idle = await tcpClient(port)
  await Promise.all([partial.closed, idle.closed])
  t.equal(await metric(s.registry, 'egressd_dns_tcp_closed_total', 'reason="idle"'), before + 2)
})

t.test('TCP: a connection answers several queries and a half-close still gets its answers', async (t) => {
  const c = await tcpClient(port)
  c.send(query('www.allowed.example', 'A', { id: 11 }))
  c.send(query('blocked.example', 'A', { id: 12 }))
  c.sock.end()
  const a = decode((await c.next())!)
  const b = decode((await c.next())!)
  t.same([a.id, b.id].sort(), [11, 12])
  await c.closed
})

t.test('TCP: at maxTcpConnections, a new client gets the slot of the oldest idle connection', async (t) => {
  // One source address per connection, so the cap binds before any per-client share
  // (src/fair-share.ts); all idle, so the oldest makes room (fair-share.test.ts has the rest).
  const held: net.Socket[] = []
  for (let i = 1; i <= 4; i++) {
    const h = net.connect({ port, host: '127.0.0.1', localAddress: `127.3.0.${i}` }).on('error', () => {})
    await new Promise<void>((resolve) => h.on('connect', () => resolve()))
    held.push(h)
    await new Promise((r) => setTimeout(r, 20))
  }
  const firstClosed = new Promise<void>((resolve) => held[0]!.on('close', () => resolve()))
  const extra = net.connect({ port, host: '127.0.0.1', localAddress: '127.3.0.9' }).on('error', () => {})
  await firstClosed
  t.equal(await metric(s.registry, 'egressd_dns_tcp_closed_total', 'reason="evicted"'), 1, 'the oldest idle connection was closed')
  t.equal(await metric(s.registry, 'egressd_dns_tcp_rejected_total'), 0, 'the new client was not refused')
  t.notOk(extra.destroyed)
  for (const h of [...held, extra]) h.destroy()
})

t.test('rate limit: REFUSED over TCP beyond the burst; UDP drops every other excess query', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], rateLimit: { qps: 0.01, burst: 3 } }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const c = await tcpClient(r0.port)
  const rcodes: number[] = []
  for (let i = 0; i < 6; i++) {
    c.send(query('blocked.example', 'A', { id: i }))
    rcodes.push((await c.next())![3]! & 0x0f)
  }
  t.same(rcodes, [3, 3, 3, 5, 5, 5], 'NXDOMAIN ×3 (burst), then REFUSED')
  c.sock.destroy()
  const udp: string[] = []
  for (let i = 0; i < 4; i++) udp.push(rcodeOf(await udpExchange(r0.port, query('blocked.example', 'A', { id: i }), 200)))
  t.same(udp, ['silence', '5', 'silence', '5'])
  t.equal(await metric(r0.registry, 'egressd_dns_queries_total', 'verdict="rate_limited"'), 7)
})

t.test('stop() lets an answer in flight go out, then closes', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort] }, STANDARD_POLICY))
  const pending = udpExchange(r0.port, query('slowish.allowed.example', 'AAAA'), 2000)
  await new Promise((r) => setTimeout(r, 30))
  await r0.close()
  const reply = await pending
  t.ok(reply, 'answered during drain')
  t.equal(await udpExchange(r0.port, query('allowed.example', 'A'), 200), null, 'closed afterwards')
})
