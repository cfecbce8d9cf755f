/**
 * Every socket case of the ClientHello corpus through a real SniProxy on loopback, to a
 * raw TCP upstream that records bytes: allowed hellos arrive byte for byte, everything
 * else is reset before any upstream connection exists.
 */
import t from 'tap'
import { corpus } from './corpus.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { fakeResolver, rawExchange, startProxy, startRawUpstream } from './harness.js'

const resolver = fakeResolver({ 'allowed.test': ['127.0.0.1'], '_srv.-a-.allowed.test': ['127.0.0.1'] })

t.test('corpus through the proxy (on_block: reset)', async (t) => {
  const cases = corpus.filter((c) => c.socket)
  const allowed = cases.filter((c) => c.verdict === 'allowed')
  const refused = cases.filter((c) => c.verdict !== 'allowed')
  t.ok(allowed.length >= 8 && refused.length >= 30, `${allowed.length} allowed and ${refused.length} refused cases`)

  for (const c of allowed) {
    const upstream = await startRawUpstream({ reply: 'pong', expect: c.bytes.length, endAfterReply: true })
    const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test', '*.allowed.test'], resolver })
    const out = await rawExchange(p.port, c.bytes, { writes: c.writes })
    t.equal(out.error, null, `${c.name}: no error`)
    t.equal(out.received.toString(), 'pong', `${c.name}: upstream's reply came back`)
    t.equal(upstream.accepted, 1, `${c.name}: one upstream connection`)
    t.ok(Buffer.from(c.bytes).equals(upstream.received[0]!.bytes), `${c.name}: upstream got the exact bytes (${c.bytes.length})`)
    t.equal(await p.metric('egressd_sni_connections_total{verdict="allowed"}'), 1, `${c.name}: counted allowed`)
    t.equal(await p.metric('egressd_sni_hello_total{result="sni_found"}'), 1)
    t.equal(await p.metric('egressd_sni_bytes_total{direction="upstream"}'), c.bytes.length, `${c.name}: upstream bytes counted`)
    t.equal(await p.metric('egressd_sni_bytes_total{direction="downstream"}'), 4)
    await p.stop()
    await upstream.close()
  }

  const upstream = await startRawUpstream()
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test', '*.allowed.test'], resolver })
  const expected = { blocked: 0, malformed: 0 }
  for (const c of refused) {
    const out = await rawExchange(p.port, c.bytes, { writes: c.writes })
    // A reset can surface as EPIPE when it beats the rest of a large write.
    t.ok(out.error === 'ECONNRESET' || (out.error === 'EPIPE' && c.bytes.length > 4096), `${c.name}: reset (${out.error})`)
    t.equal(out.received.length, 0, `${c.name}: nothing came back`)
    expected[c.verdict as 'blocked' | 'malformed']++
  }
  t.equal(upstream.accepted, 0, 'the upstream accepted no connection at all')
  t.equal(await p.metric('egressd_sni_connections_total{verdict="blocked"}'), expected.blocked)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="malformed"}'), expected.malformed)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="allowed"}'), 0)
  t.equal(await p.metric('egressd_sni_hello_total{result="sni_not_found"}'), 2, 'no SNI, twice')
  t.equal(await p.metric('egressd_sni_hello_total{result="ip_literal"}'), refused.filter((c) => c.expect.kind === 'error' && c.expect.reason === 'ip_literal').length)
  t.equal(await p.metric('egressd_sni_hello_total{result="not_tls"}'), 3)
  t.equal(await p.metric('egressd_sni_hello_total{result="sslv2"}'), 1)
  t.equal(await p.metric('egressd_sni_hello_total{result="too_large"}'), 1)
  t.equal(await p.metric('egressd_blocked_total{protocol="sni",name="127.0.0.1"}'), 1, 'IP literal recorded as a blocked name')
  t.equal(await p.metric('egressd_sni_active_connections'), 0)
  t.equal(resolver.calls.filter((n) => n !== 'allowed.test' && n !== '_srv.-a-.allowed.test').length, 0, 'nothing but allowed names was resolved')
  const lines = p.logs.filter((l) => l.protocol === 'sni')
  t.equal(lines.length, refused.length, 'one log line per refused connection')
  t.match(lines.find((l) => l.reason === 'no_sni'), { name: null, verdict: 'malformed', rule: null, client: '127.0.0.1' })
  t.match(lines.find((l) => l.reason === 'ip_literal'), { name: '127.0.0.1', verdict: 'blocked' })
  await p.stop()
  await upstream.close()
})

t.test('a blocked name and a denied name: reset, counted, logged with the deciding rule', async (t) => {
  const upstream = await startRawUpstream()
  // A brace entry: the log names the rule that matched, as DNS lines do, not the entry as written.
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['*.example.test'], deny: ['{bad,worse}.example.test'], resolver })
  for (const name of ['other.test', 'bad.example.test', 'example.test']) {
    const out = await rawExchange(p.port, buildClientHello({ sni: name }))
    t.equal(out.error, 'ECONNRESET', `${name}: reset`)
  }
  t.equal(upstream.accepted, 0)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="blocked"}'), 3)
  t.equal(await p.metric('egressd_blocked_total{protocol="sni",name="bad.example.test"}'), 1)
  t.equal(await p.metric('egressd_client_blocked_total{protocol="sni",client="127.0.0.1"}'), 3, 'blocked TLS connections by device')
  t.match(
    p.logs.find((l) => l.name === 'bad.example.test'),
    { protocol: 'sni', verdict: 'blocked', rule: 'bad.example.test', reason: 'denied', client: '127.0.0.1', msg: 'blocked' },
  )
  t.match(p.logs.find((l) => l.name === 'other.test'), { rule: null })
  await p.stop()
  await upstream.close()
})

t.test('on_block: alert sends a fatal alert record, then ends', async (t) => {
  const upstream = await startRawUpstream()
  const p = await startProxy({ sni: { upstreamPort: upstream.port, onBlock: 'alert' }, allow: ['allowed.test'], resolver })
  const cases: [string, Uint8Array, number | null][] = [
    ['blocked name', buildClientHello({ sni: 'other.test' }), 49],
    ['IP literal', buildClientHello({ sni: '10.1.2.3' }), 49],
    ['no SNI', buildClientHello({}), 112],
    ['two names', buildClientHello({ sni: ['a.test', 'b.test'] }), 50],
    ['HTTP', new TextEncoder().encode('GET / HTTP/1.0\r\n\r\n'), null],
  ]
  for (const [name, bytes, alert] of cases) {
    const out = await rawExchange(p.port, bytes)
    if (alert === null) {
      t.equal(out.error, 'ECONNRESET', `${name}: not TLS, so a reset even in alert mode`)
      continue
    }
    t.equal(out.error, null, `${name}: no reset`)
    t.ok(out.ended, `${name}: FIN after the alert`)
    t.same([...out.received], [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert], `${name}: alert ${alert}`)
  }
  t.equal(upstream.accepted, 0)
  await p.stop()
  await upstream.close()
})

t.test('the hello is bounded by max_client_hello_bytes', async (t) => {
  const upstream = await startRawUpstream({ reply: 'ok', endAfterReply: true })
  const p = await startProxy({ sni: { upstreamPort: upstream.port, maxClientHelloBytes: 1024 }, allow: ['allowed.test'], resolver })
  const fits = buildClientHello({ sni: 'allowed.test', extraExtensionBytes: 600 })
  const big = buildClientHello({ sni: 'allowed.test', extraExtensionBytes: 1200 })
  t.equal((await rawExchange(p.port, big)).error, 'ECONNRESET')
  t.equal(await p.metric('egressd_sni_hello_total{result="too_large"}'), 1)
  const ok = await rawExchange(p.port, fits, { end: true })
  t.equal(ok.received.toString(), 'ok')
  t.equal(upstream.accepted, 1)
  await p.stop()
  await upstream.close()
})
