/**
 * Graceful stop drains (issue #17, item 8): every query accepted before stop() gets an
 * answer — its real one when the upstream answers within the drain window, SERVFAIL at
 * the window's end otherwise — and nothing of the resolver outlives stop().
 */
import t from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import type { HostPort } from '../../src/net/host-port.js'
import { allow, decode, fakeUpstream, makeConfig, query, startService, tcpClient, udpExchange } from './helpers.js'

/** An upstream that reads queries over UDP and TCP on one port and never answers. */
async function blackHole(): Promise<{ hostPort: HostPort; close(): void }> {
  const conns = new Set<net.Socket>()
  const tcp = net.createServer((c) => {
    conns.add(c)
    c.on('error', () => {})
    c.resume()
  })
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', () => r()))
  const port = (tcp.address() as net.AddressInfo).port
  const sock = dgram.createSocket('udp4')
  sock.on('message', () => {})
  await new Promise<void>((r) => sock.bind(port, '127.0.0.1', () => r()))
  return {
    hostPort: { host: '127.0.0.1', port, family: 4 },
    close: () => {
      sock.close()
      for (const c of conns) c.destroy()
      tcp.close()
    },
  }
}

const A = (name: string) => ({ answers: [{ type: 'A' as const, name, ttl: 60, data: '192.0.2.1' }] })

t.test('answers arriving within the drain window are relayed after stop() began', async (t) => {
  const up = await fakeUpstream(async (q) => {
    await new Promise((r) => setTimeout(r, 400))
    return A(q.name)
  })
  const s = await startService(makeConfig({ upstreams: [up.hostPort], upstreamTimeoutMs: 2000 }, allow('*.slow.test')))
  t.teardown(() => up.close())
  const udp = Array.from({ length: 20 }, (_, i) => udpExchange(s.port, query(`u${i}.slow.test`, 'A', { id: i }), 3000))
  const tcp = await tcpClient(s.port)
  for (let i = 0; i < 5; i++) tcp.send(query(`t${i}.slow.test`, 'A', { id: 100 + i }))
  const tcpAnswers = Promise.all(Array.from({ length: 5 }, () => tcp.next(3000)))
  await new Promise((r) => setTimeout(r, 100))
  await s.close()
  for (const a of [...(await Promise.all(udp)), ...(await tcpAnswers)]) {
    t.ok(a, 'answered')
    if (a) t.equal((decode(a) as { rcode?: string }).rcode, 'NOERROR')
  }
})

t.test('queries whose upstream never answers get SERVFAIL when the drain window ends', async (t) => {
  // Two silent upstreams at 5 s each: without the drain's SERVFAIL these waited 10 s.
  const silent = await blackHole()
  const silent2 = await blackHole()
  t.teardown(() => {
    silent.close()
    silent2.close()
  })
  const s = await startService(makeConfig({ upstreams: [silent.hostPort, silent2.hostPort], upstreamTimeoutMs: 5000 }, allow('*.slow.test')))
  const udp = Array.from({ length: 20 }, (_, i) => udpExchange(s.port, query(`u${i}.slow.test`, 'A', { id: i, edns: i % 2 === 0 }), 4000))
  const tcp = await tcpClient(s.port)
  for (let i = 0; i < 5; i++) tcp.send(query(`t${i}.slow.test`, 'A', { id: 100 + i }))
  const tcpAnswers = Promise.all(Array.from({ length: 5 }, () => tcp.next(4000)))
  await new Promise((r) => setTimeout(r, 200))
  t.equal(s.svc.resolver.pending, 25, `all 25 waiting upstream (${s.svc.resolver.pending})`)
  const started = Date.now()
  await s.close()
  const took = Date.now() - started
  t.ok(took < 2600, `stop() took ${took} ms (drain window 2000 ms)`)
  const answers = [...(await Promise.all(udp)), ...(await tcpAnswers)]
  t.equal(answers.filter((a) => a !== null).length, 25, 'every query answered')
  for (const [i, a] of answers.entries()) {
    if (a === null) continue
    const p = decode(a)
    t.equal((p as { rcode?: string }).rcode, 'SERVFAIL')
    t.equal(p.questions?.[0]?.name, i < 20 ? `u${i}.slow.test` : `t${i - 20}.slow.test`, 'the question echoed')
  }
  t.equal(s.svc.resolver.pending, 0, 'upstream tries ended by stop()')
})
