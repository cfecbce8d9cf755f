/**
 * Fair shares of the DNS budgets (issue #17, item 5), over real sockets from distinct
 * loopback source addresses (all of 127/8 is local on Linux): the pending-upstream budget
 * and the TCP connection cap (src/fair-share.ts).
 */
import t from 'tap'
import net from 'node:net'
import { allow, decode, fakeUpstream, makeConfig, metric, query, startService, udpExchange } from './helpers.js'

const rcode = (b: Buffer | null): string | null => (b === null ? null : ((decode(b) as { rcode?: string }).rcode ?? null))

/** One datagram from `local`, the first reply or null. */
const udpFrom = (local: string, port: number, msg: Buffer, timeoutMs = 3000): Promise<Buffer | null> => udpExchange(port, msg, timeoutMs, '127.0.0.1', local)

interface Conn {
  sock: net.Socket
  closed: boolean
  ask(msg: Buffer, timeoutMs?: number): Promise<Buffer | null>
}

/** A DNS-over-TCP connection from `local`; `ask` sends one query and waits for one answer. */
async function tcpFrom(local: string, port: number): Promise<Conn> {
  const sock = net.connect({ host: '127.0.0.1', port, localAddress: local })
  sock.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve)
    sock.once('error', reject)
  })
  const c: Conn = {
    sock,
    closed: false,
    ask(msg, timeoutMs = 3000) {
      return new Promise((resolve) => {
        let buf = Buffer.alloc(0)
        const timer = setTimeout(() => done(null), timeoutMs)
        const onData = (d: Buffer): void => {
          buf = Buffer.concat([buf, d])
          if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(buf.subarray(2, 2 + buf.readUInt16BE(0)))
        }
        const done = (r: Buffer | null): void => {
          clearTimeout(timer)
          sock.off('data', onData)
          sock.off('close', onClose)
          resolve(r)
        }
        const onClose = (): void => done(null)
        sock.on('data', onData)
        sock.on('close', onClose)
        const len = Buffer.alloc(2)
        len.writeUInt16BE(msg.length)
        sock.write(Buffer.concat([len, msg]))
      })
    },
  }
  sock.on('close', () => (c.closed = true))
  return c
}

const settle = () => new Promise((r) => setTimeout(r, 100))

t.test('pending upstream: one client holds at most its share, another is still forwarded', async (t) => {
  const up = await fakeUpstream(async (q) => {
    await new Promise((r) => setTimeout(r, 600))
    return { answers: [{ type: 'A' as const, name: q.name, ttl: 60, data: '192.0.2.1' }] }
  })
  t.teardown(() => up.close())
  const s = await startService(makeConfig({ upstreams: [up.hostPort], upstreamTimeoutMs: 3000, maxPendingUpstream: 8 }, allow('*.wild.test')))
  t.teardown(() => s.close())
  // Eight random names under an allowed wildcard: only half the budget goes upstream.
  const flood = Array.from({ length: 8 }, (_, i) => udpFrom('127.1.0.1', s.port, query(`r${i}x${Math.random().toString(36).slice(2)}.wild.test`, 'A', { id: i })))
  await new Promise((r) => setTimeout(r, 150))
  t.equal(s.svc.resolver.pending, 4, 'the flooding client holds 4 of 8')
  const victim = await Promise.all([0, 1].map((i) => udpFrom('127.1.0.2', s.port, query(`v${i}.wild.test`, 'A', { id: 100 + i }))))
  t.same(victim.map(rcode), ['NOERROR', 'NOERROR'], 'the other client is forwarded and answered')
  const floodCodes = (await Promise.all(flood)).map(rcode)
  t.equal(floodCodes.filter((c) => c === 'NOERROR').length, 4)
  t.equal(floodCodes.filter((c) => c === 'SERVFAIL').length, 4, 'beyond its share: SERVFAIL at once')
  t.equal(await metric(s.registry, 'egressd_dns_overload_total'), 4)
})

t.test('TCP cap: a client holds at most its share; at the cap the largest holder loses its oldest idle connection', async (t) => {
  const up = await fakeUpstream((q) => ({ answers: [{ type: 'A' as const, name: q.name, ttl: 60, data: '192.0.2.1' }] }))
  t.teardown(() => up.close())
  const s = await startService(makeConfig({ upstreams: [up.hostPort], maxTcpConnections: 8, tcpIdleTimeoutMs: 60_000 }, allow('*.wild.test')))
  t.teardown(() => s.close())
  const a: Conn[] = []
  for (let i = 0; i < 6; i++) {
    a.push(await tcpFrom('127.1.1.1', s.port))
    await settle()
  }
  t.same(a.map((c) => c.closed), [true, true, false, false, false, false], 'alone, A keeps its share of 4: its two oldest idle went')
  const b = [await tcpFrom('127.1.1.2', s.port), await tcpFrom('127.1.1.2', s.port)]
  const c = await tcpFrom('127.1.1.3', s.port)
  const d = await tcpFrom('127.1.1.4', s.port)
  await settle()
  t.equal(s.svc['server'].tcpConnections, 8, 'the cap is reached')
  // A's newest connection is busy once: it is no longer its oldest idle.
  t.equal(rcode(await a[2]!.ask(query('a.wild.test', 'A'))), 'NOERROR')
  const e = await tcpFrom('127.1.1.5', s.port)
  await settle()
  t.equal(rcode(await e.ask(query('e.wild.test', 'A'))), 'NOERROR', 'the newcomer is served, not refused')
  t.same(a.map((x) => x.closed), [true, true, false, true, false, false], "A's oldest idle connection made room")
  t.notOk(b[0]!.closed || b[1]!.closed || c.closed || d.closed, 'smaller holders untouched')
  t.equal(await metric(s.registry, 'egressd_dns_tcp_closed_total', 'reason="evicted"'), 3)
  t.equal(await metric(s.registry, 'egressd_dns_tcp_rejected_total'), 0)
})

t.test('TCP cap: when every connection has a query pending, the newcomer is refused', async (t) => {
  const up = await fakeUpstream(async (q) => {
    await new Promise((r) => setTimeout(r, 800))
    return { answers: [{ type: 'A' as const, name: q.name, ttl: 60, data: '192.0.2.1' }] }
  })
  t.teardown(() => up.close())
  const s = await startService(makeConfig({ upstreams: [up.hostPort], upstreamTimeoutMs: 3000, maxTcpConnections: 4 }, allow('*.wild.test')))
  t.teardown(() => s.close())
  const conns = await Promise.all([1, 2, 3, 4].map((i) => tcpFrom(`127.1.2.${i}`, s.port)))
  const answers = conns.map((c, i) => c.ask(query(`busy${i}.wild.test`, 'A')))
  await settle()
  const late = await tcpFrom('127.1.2.9', s.port)
  await settle()
  t.ok(late.closed, 'refused: no idle connection to close')
  t.same((await Promise.all(answers)).map(rcode), ['NOERROR', 'NOERROR', 'NOERROR', 'NOERROR'], 'the busy ones are answered')
  t.equal(await metric(s.registry, 'egressd_dns_tcp_rejected_total'), 1)
})
