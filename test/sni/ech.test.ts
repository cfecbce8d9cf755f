/**
 * ClientHellos carrying encrypted_client_hello (0xfe0d) through the proxy: judged on
 * their outer name as any hello, counted in egressd_sni_ech_hellos_total{verdict}, and
 * the block line names the outer name with `ech: true` and a message that says so.
 */
import t from 'tap'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { parseDecision } from '../../src/log/decision.js'
import { fakeResolver, rawExchange, startProxy, startRawUpstream } from './harness.js'

const resolver = fakeResolver({ 'public.cdn.test': ['127.0.0.1'], 'plain.test': ['127.0.0.1'] })

t.test('an ECH hello whose outer name is not allowed: reset, counted, the line says ECH', async (t) => {
  const p = await startProxy({ allow: ['plain.test'], resolver })
  t.teardown(() => p.stop())
  const hello = buildClientHello({ sni: 'cloudflare-ech.test', ech: true, alpn: ['h2'] })
  t.ok(Buffer.from(hello).includes(Buffer.from([0xfe, 0x0d])), 'the hello carries 0xfe0d')
  const out = await rawExchange(p.port, hello)
  t.equal(out.error, 'ECONNRESET')
  t.equal(await p.metric('egressd_sni_ech_hellos_total{verdict="blocked"}'), 1)
  t.equal(await p.metric('egressd_sni_hello_total{result="sni_found"}'), 1, 'still a hello with a name')
  const line = p.logs.find((l) => l.verdict === 'blocked')!
  t.match(line, { protocol: 'sni', name: 'cloudflare-ech.test', ech: true, reason: 'not_allowed', msg: 'blocked (ECH hello: outer name)' })
  t.same(parseDecision(line)?.ech, true, 'suggest reads it back with ech')

  // An ordinary hello to the same name: the line has no ech and the plain message.
  await rawExchange(p.port, buildClientHello({ sni: 'cloudflare-ech.test' }))
  const plain = p.logs.filter((l) => l.verdict === 'blocked')[1]!
  t.equal(plain.ech, undefined)
  t.equal(plain.msg, 'blocked')
  t.equal(await p.metric('egressd_sni_ech_hellos_total{verdict="blocked"}'), 1, 'not counted as ECH')
})

t.test('an ECH hello whose outer name is allowed passes, byte for byte', async (t) => {
  const hello = buildClientHello({ sni: 'public.cdn.test', ech: true })
  const upstream = await startRawUpstream({ reply: 'spliced', expect: hello.length, endAfterReply: true })
  t.teardown(() => upstream.close())
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['public.cdn.test'], resolver })
  t.teardown(() => p.stop())
  const out = await rawExchange(p.port, hello, { end: true })
  t.equal(out.received.toString(), 'spliced')
  t.same(upstream.received[0]!.bytes, Buffer.from(hello), 'the outer hello, ECH extension included, reached the upstream unchanged')
  t.equal(await p.metric('egressd_sni_ech_hellos_total{verdict="allowed"}'), 1)
  t.equal(await p.metric('egressd_sni_ech_hellos_total{verdict="blocked"}'), 0)
})
