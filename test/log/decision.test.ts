// The decision event (src/log/decision.ts): every verdict of both protocols written by
// writeDecision parses back into the same DecisionEvent, and the lines the real DNS
// service and SNI proxy write parse back too, with the fields each protocol promises.
import t from 'tap'
import { captureLog } from '../helpers/capture-log.js'
import { DECISION_PROTOCOLS, DECISION_VERDICTS, parseDecision, writeDecision, type DecisionEvent } from '../../src/log/decision.js'
import { allow, deny, fakeUpstream, makeConfig, query, standardZone, startService, udpExchange } from '../dns/helpers.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { fakeResolver, rawExchange, startProxy, startRawUpstream } from '../sni/harness.js'

const capture = () => captureLog('debug')

const flush = () => new Promise((r) => setImmediate(r))

t.test('every protocol and verdict round-trips through a log line', async (t) => {
  const { log, lines } = capture()
  const events: DecisionEvent[] = []
  for (const protocol of DECISION_PROTOCOLS) {
    for (const verdict of DECISION_VERDICTS) {
      const event: DecisionEvent = {
        protocol,
        client: '192.0.2.7',
        name: verdict === 'malformed' ? null : 'x.example.com',
        ...(protocol === 'dns' && { type: 'AAAA' }),
        verdict,
        rule: verdict === 'allowed' || verdict === 'would_block' ? '*.example.com' : null,
        reason: verdict === 'allowed' ? null : `${verdict}_reason`,
        group: 'cams',
        mode: verdict === 'would_block' ? 'report' : 'enforce',
        ...(verdict === 'would_block' && { report_rule: '*' }),
        ...(protocol === 'sni' && verdict === 'blocked' && { ech: true }),
        ...(protocol === 'dns' && (verdict === 'timeout' || verdict === 'upstream_error') && {
          upstreams: [
            { upstream: '192.0.2.53:53', transport: 'udp' as const, reason: 'timeout', error: 'upstream 192.0.2.53:53 timed out' },
            { upstream: 'tls://dns.example@192.0.2.54:853', transport: 'tls' as const, reason: 'certificate', error: 'CERT_HAS_EXPIRED' },
          ],
        }),
      }
      events.push(event)
      writeDecision(log, event)
    }
  }
  await flush()
  t.equal(lines.length, events.length, 'one line per event, allowed included at debug')
  for (const [i, line] of lines.entries()) {
    t.same(parseDecision(line), events[i], `${events[i]!.protocol} ${events[i]!.verdict}`)
    t.type(line.msg, 'string')
  }
  t.equal(lines.find((l) => l.verdict === 'rebind_blocked')?.level, 40, 'a rebinding block is a warning')
  t.equal(lines.find((l) => l.verdict === 'allowed')?.level, 20, 'an allowed decision is a debug line')
  const level = (protocol: string, verdict: string) => lines.find((l) => l.protocol === protocol && l.verdict === verdict)?.level
  t.equal(level('dns', 'timeout'), 40, 'no DNS upstream answering is the operator\'s to fix: a warning')
  t.equal(level('dns', 'upstream_error'), 40)
  t.equal(level('sni', 'upstream_error'), 40)
  t.equal(level('sni', 'timeout'), 30, 'a hello that never came is the device\'s doing: info')
  t.equal(level('dns', 'blocked'), 30)
})

t.test('lines that are not decision events parse to null', async (t) => {
  const bad: unknown[] = [
    null, 'text', 42, {}, { protocol: 'dns' }, { protocol: 'ftp', verdict: 'allowed' },
    { protocol: 'dns', verdict: 'maybe' }, { protocol: 'dns', verdict: 'allowed', client: 7 },
    { protocol: 'dns', verdict: 'allowed', mode: 'audit' }, { protocol: 'sni', verdict: 'blocked', ech: 'yes' },
    { protocol: 'dns', verdict: 'blocked', group: 3 },
    { protocol: 'dns', verdict: 'timeout', upstreams: 'x' },
    { protocol: 'dns', verdict: 'timeout', upstreams: [{ upstream: 'x', transport: 'quic', reason: 'timeout', error: 'e' }] },
    { protocol: 'dns', verdict: 'upstream_error', upstreams: [{ upstream: 'x', transport: 'udp', reason: 'timeout' }] },
  ]
  for (const b of bad) t.equal(parseDecision(b), null, JSON.stringify(b))
})

t.test('lines from before the event was typed read with the defaults they meant', async (t) => {
  t.same(parseDecision({ level: 20, msg: 'dns query', protocol: 'dns', client: '::1', name: 'a.test', type: 'A', verdict: 'allowed', rule: 'a.test' }), {
    protocol: 'dns', client: '::1', name: 'a.test', type: 'A', verdict: 'allowed', rule: 'a.test', reason: null, group: 'default', mode: 'enforce',
  })
})

t.test('the DNS service writes lines that parse back, for each verdict it can reach', async (t) => {
  const up = await fakeUpstream(standardZone)
  t.teardown(() => up.close())
  const s = await startService(
    makeConfig({ upstreams: [up.hostPort] }, [...allow('allowed.example', '*.allowed.example'), ...deny('denied.allowed.example')]),
  )
  t.teardown(() => s.close())
  const ask = (name: string) => udpExchange(s.port, query(name, 'A'))
  await ask('allowed.example')
  await ask('nothing.test')
  await ask('denied.allowed.example')
  await ask('private.allowed.example')
  await flush()
  const events = s.logs.map(parseDecision).filter((e) => e !== null)
  const by = (name: string) => events.find((e) => e.name === name)
  t.match(by('allowed.example'), { protocol: 'dns', verdict: 'allowed', rule: 'allowed.example', reason: null, group: 'default', mode: 'enforce', type: 'A', client: '127.0.0.1' })
  t.match(by('nothing.test'), { protocol: 'dns', verdict: 'blocked', rule: null, reason: 'not_allowed', group: 'default', mode: 'enforce' })
  t.match(by('denied.allowed.example'), { protocol: 'dns', verdict: 'blocked', rule: 'denied.allowed.example', reason: 'denied' })
  t.match(events.find((e) => e.verdict === 'rebind_blocked'), { name: 'private.allowed.example', protocol: 'dns', verdict: 'rebind_blocked', rule: '*.allowed.example', reason: 'private_address', group: 'default' })
  for (const line of s.logs.filter((l) => l.protocol === 'dns')) t.not(parseDecision(line), null, `parses: ${line.msg}`)
})

t.test('the SNI proxy writes lines that parse back, for each verdict it can reach', async (t) => {
  const upstream = await startRawUpstream({ reply: 'hi', endAfterReply: true })
  t.teardown(() => upstream.close())
  const resolver = fakeResolver({ 'allowed.test': ['127.0.0.1'] })
  const p = await startProxy({ sni: { upstreamPort: upstream.port, handshakeTimeoutMs: 300 }, allow: ['allowed.test', 'gone.test'], resolver, level: 'debug' })
  t.teardown(() => p.stop())
  await rawExchange(p.port, buildClientHello({ sni: 'allowed.test' }), { end: true, timeoutMs: 2000 })
  await rawExchange(p.port, buildClientHello({ sni: 'blocked.test' }), { timeoutMs: 2000 })
  await rawExchange(p.port, Buffer.from('GET / HTTP/1.1\r\n\r\n'), { timeoutMs: 2000 })
  await rawExchange(p.port, Uint8Array.from([0x16, 0x03, 0x01]), { timeoutMs: 2000 })
  await rawExchange(p.port, buildClientHello({ sni: 'gone.test' }), { timeoutMs: 2000 })
  await flush()
  const events = p.logs.map(parseDecision).filter((e) => e !== null)
  t.match(events.find((e) => e.verdict === 'allowed'), { protocol: 'sni', name: 'allowed.test', rule: 'allowed.test', reason: null, group: 'default', mode: 'enforce' })
  t.match(events.find((e) => e.verdict === 'blocked' && e.name === 'blocked.test'), { protocol: 'sni', reason: 'not_allowed', rule: null })
  t.match(events.find((e) => e.verdict === 'malformed'), { protocol: 'sni', name: null })
  t.match(events.find((e) => e.verdict === 'timeout'), { protocol: 'sni', name: null, reason: 'timeout' })
  t.match(events.find((e) => e.verdict === 'upstream_error'), { protocol: 'sni', name: 'gone.test', reason: 'resolve' })
  for (const e of events) t.type(e.client, 'string', `${e.verdict}: the client is known`)
})
