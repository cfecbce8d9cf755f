/**
 * SIGTERM drains (issue #17, item 8), on the built daemon: queries in flight at SIGTERM
 * all get an answer (the real one from an upstream that answers within the drain window,
 * SERVFAIL for one that never answers), and the process exits promptly after "stopped".
 */
import t from 'tap'
import dgram from 'node:dgram'
import dnsPacket from 'dns-packet'
import { query, udpExchange } from '../dns/helpers.js'
import { freePort, startDaemon } from '../helpers/daemon.js'

/** Answers `slow*` names after 500 ms with one A record; never answers anything else. */
async function slowUpstream(): Promise<{ port: number; close(): void }> {
  const sock = dgram.createSocket('udp4')
  const timers = new Set<NodeJS.Timeout>()
  sock.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg)
    const name = q.questions?.[0]?.name ?? ''
    if (!name.startsWith('slow')) return
    const timer = setTimeout(() => {
      timers.delete(timer)
      const reply = dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
        questions: q.questions,
        answers: [{ type: 'A', name, ttl: 60, data: '198.51.100.9' }],
      })
      sock.send(reply, rinfo.port, rinfo.address)
    }, 500)
    timers.add(timer)
  })
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
  return {
    port: sock.address().port,
    close: () => {
      for (const timer of timers) clearTimeout(timer)
      sock.close()
    },
  }
}

t.test('SIGTERM: every query in flight is answered, then the process exits promptly', async (t) => {
  const up = await slowUpstream()
  t.teardown(() => up.close())
  const port = await freePort()
  const d = startDaemon(
    [
      'dns:',
      `  listen: ["127.0.0.1:${port}"]`,
      `  upstreams: ["127.0.0.1:${up.port}"]`,
      '  upstream_timeout_ms: 10000',
      'sni:',
      '  listen: []',
      'metrics:',
      '  listen: null',
      'allow: ["*.drain.test"]',
      '',
    ].join('\n'),
  )
  t.teardown(() => d.stop())
  await d.waitForLog('ready')
  const slow = Array.from({ length: 10 }, (_, i) => udpExchange(port, query(`slow${i}.drain.test`, 'A', { id: i }), 4000))
  const never = Array.from({ length: 10 }, (_, i) => udpExchange(port, query(`never${i}.drain.test`, 'A', { id: 100 + i }), 4000))
  await new Promise((r) => setTimeout(r, 150))
  d.proc.kill('SIGTERM')
  const slowAnswers = await Promise.all(slow)
  const neverAnswers = await Promise.all(never)
  t.same(slowAnswers.map((a) => a && (dnsPacket.decode(a) as { rcode?: string }).rcode), Array(10).fill('NOERROR'), 'answers within the window are relayed')
  t.same(neverAnswers.map((a) => a && (dnsPacket.decode(a) as { rcode?: string }).rcode), Array(10).fill('SERVFAIL'), 'the rest get SERVFAIL')
  const stopped = await d.waitForLog('stopped', 5000)
  const stoppedAt = Date.now()
  t.ok(stopped)
  const code = await d.exited
  const lag = Date.now() - stoppedAt
  t.equal(code, 0)
  t.ok(lag < 1000, `exited ${lag} ms after "stopped" (an upstream try had 10 s left)`)
})
