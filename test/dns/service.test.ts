/**
 * DnsService in-process on 127.0.0.1:0 against a dns2 fake upstream, driven by real
 * dig/kdig and by raw sockets (exact bytes).
 */
import t from 'tap'
import { compileConfig } from '../../src/daemon/compiled-config.js'
import dgram from 'node:dgram'
import dnsPacket from 'dns-packet'
import {
  allow,
  cidr,
  decode,
  dig,
  fakeUpstream,
  hasTool,
  HTTPS_RDATA,
  makeConfig,
  metric,
  query,
  STANDARD_POLICY,
  standardZone,
  startService,
  tcpClient,
  udpExchange,
} from './helpers.js'

const haveDig = await hasTool('dig')
const haveKdig = await hasTool('kdig')
const noDig = haveDig ? false : 'dig not installed'
const noKdig = haveKdig ? false : 'kdig not installed'

const up = await fakeUpstream(standardZone)
t.teardown(() => up.close())

let now = Date.now()
const sinkCalls: { name: string; rule: string; addresses: unknown[] }[] = []
let sinkDelay = 0
let sinkFail = false
const s = await startService(
  makeConfig({ upstreams: [up.hostPort], rebindExempt: allow('exempt.allowed.example') }, STANDARD_POLICY),
  {
    now: () => now,
    onAllowedAnswer: async ({ name, rule, addresses }) => {
      sinkCalls.push({ name, rule: rule.pattern, addresses: [...addresses] })
      if (sinkDelay > 0) await new Promise((r) => setTimeout(r, sinkDelay))
      if (sinkFail) throw new Error('nft said no')
    },
  },
)
t.teardown(() => s.close())
const port = s.port

const upstreamCount = (name: string) => up.queries.filter((q) => q.name.toLowerCase() === name).length

t.test('blocked name: NXDOMAIN with the question echoed and EDE 15 (dig, kdig)', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['nope.example', 'A'])
  t.equal(r.status, 'NXDOMAIN')
  t.match(r.question, /^;nope\.example\.\s+IN\s+A$/)
  t.match(r.ede, /^15 \(Blocked\).*not on allowlist/)
  t.ok(r.flags.includes('qr') && r.flags.includes('rd') && r.flags.includes('ra'), r.flags.join(' '))
  t.equal(upstreamCount('nope.example'), 0, 'never sent upstream')
  const d = await dig('dig', port, ['denied.allowed.example', 'AAAA'])
  // RFC 8020: x.denied.allowed.example is still allowed by *.allowed.example, so the
  // denied name itself is NODATA; NXDOMAIN would tell a resolver nothing exists below it.
  t.equal(d.status, 'NOERROR', 'deny wins over *.allowed.example, answered NODATA')
  t.equal(d.answers.length, 0)
  t.match(d.text, /EDE: 15 \(Blocked\)/)
  const line = s.logs.find((l) => l.name === 'denied.allowed.example')
  t.match(line, { protocol: 'dns', client: '127.0.0.1', type: 'AAAA', verdict: 'blocked', rule: 'denied.allowed.example', reason: 'denied', level: 30 })
  t.match(
    s.logs.find((l) => l.name === 'nope.example'),
    { verdict: 'blocked', rule: null, reason: 'not_allowed' },
  )
  t.equal(await metric(s.registry, 'egressd_blocked_total', 'protocol="dns",name="nope.example"'), 1)
  t.ok((await metric(s.registry, 'egressd_dns_queries_total', 'verdict="blocked"')) >= 2)
})

t.test('kdig sees the same NXDOMAIN and EDE', { skip: noKdig }, async (t) => {
  const r = await dig('kdig', port, ['+edns', 'blocked.example', 'A'])
  t.equal(r.status, 'NXDOMAIN')
  t.match(r.text, /EDE: 15 \(Blocked\)/)
})

t.test('blocked name with allowed names below it: NODATA', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['vendor.example', 'A'])
  t.equal(r.status, 'NOERROR')
  t.equal(r.answers.length, 0)
  t.match(r.question, /^;vendor\.example\.\s+IN\s+A$/)
  t.match(r.ede, /^15 \(Blocked\)/)
  const tcp = await dig('dig', port, ['+tcp', 'vendor.example', 'A'])
  t.equal(tcp.status, 'NOERROR', 'same over TCP')
})

t.test('allowed name relayed; TCP queries go upstream over TCP', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['allowed.example', 'A'])
  t.equal(r.status, 'NOERROR')
  t.same(r.answers.map((a) => a[4]), ['93.184.216.34'])
  t.equal(r.ede, null)
  t.match(r.text, /; EDNS: version: 0, flags:; udp: 1232/, 'our OPT, not the upstream 4096 one')
  const before = up.queries.length
  const tcp = await dig('dig', port, ['+tcp', 'www.allowed.example', 'AAAA'])
  t.same(tcp.answers.map((a) => a[4]), ['2606:2800:220:1::1'])
  t.same(
    up.queries.slice(before).map((q) => q.transport),
    ['tcp'],
  )
})

t.test('HTTPS (type 65) and TXT rdata relayed byte for byte; upstream cookie not passed on', async (t) => {
  for (const [name, type, rdata] of [
    ['https.allowed.example', 'UNKNOWN_65', HTTPS_RDATA],
    ['txt.allowed.example', 'TXT', Buffer.from('\x05hello\x05world', 'latin1')],
  ] as const) {
    const reply = (await udpExchange(port, query(name, type, { edns: true })))!
    const d = decode(reply)
    t.equal(d.answers!.length, 1, name)
    const a = d.answers![0]!
    // Locate the rdata in the raw bytes: it is the last thing before our 11-byte OPT.
    const rdataEnd = reply.length - 11
    t.same(reply.subarray(rdataEnd - rdata.length, rdataEnd), rdata, `${name} rdata bytes`)
    t.equal(reply.readUInt16BE(rdataEnd - rdata.length - 2), rdata.length)
    t.equal(a.type, type === 'TXT' ? 'TXT' : 'UNKNOWN_65')
    const opt = d.additionals![0] as dnsPacket.OptAnswer
    t.same(opt.options, [])
    t.equal(opt.udpPayloadSize, 1232)
  }
})

t.test('dig shows the HTTPS record it was relayed', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['https.allowed.example', 'TYPE65'])
  t.equal(r.status, 'NOERROR')
  t.equal(r.answers.length, 1)
  t.match(r.answers[0]!.join(' '), /(HTTPS 1 \. alpn="h2"|TYPE65 \\# 10 0001000001000302 ?6832)/)
})

t.test('EDNS DO bit: copied upstream, back to the client, separate cache entry', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['+dnssec', 'txt.allowed.example', 'TXT'])
  t.equal(r.status, 'NOERROR')
  t.match(r.text, /; EDNS: version: 0, flags: do; udp: 1232/)
  const plain = await dig('dig', port, ['+noedns', 'txt.allowed.example', 'TXT'])
  t.notMatch(plain.text, /EDNS/, 'no OPT for a query without one')
  t.equal(plain.answers.length, 1)
})

t.test('cache hit: no upstream query, TTLs aged on the injected clock, 0x20 case kept', async (t) => {
  const q = query('cname.allowed.example', 'A', { id: 1 })
  const first = decode((await udpExchange(port, q))!)
  t.same(
    first.answers!.map((a) => (a as { ttl: number }).ttl),
    [100, 50],
  )
  const sent = upstreamCount('cname.allowed.example')
  now += 30_000
  const hits = await metric(s.registry, 'egressd_dns_cache_hits_total')
  const second = decode((await udpExchange(port, query('CNAME.Allowed.EXAMPLE', 'A', { id: 2 })))!)
  t.equal(second.id, 2)
  t.equal(second.questions![0]!.name, 'CNAME.Allowed.EXAMPLE')
  t.same(
    second.answers!.map((a) => (a as { ttl: number }).ttl),
    [70, 20],
  )
  t.equal(upstreamCount('cname.allowed.example'), sent, 'answered from cache')
  t.equal(await metric(s.registry, 'egressd_dns_cache_hits_total'), hits + 1)
  now += 21_000 // past the 50 s minimum TTL
  await udpExchange(port, query('cname.allowed.example', 'A', { id: 3 }))
  t.equal(upstreamCount('cname.allowed.example'), sent + 1, 'expired: asked again')
})

t.test('negative answers cached per RFC 2308', async (t) => {
  const a = decode((await udpExchange(port, query('nx.allowed.example', 'A')))!)
  t.equal((a as { rcode?: string }).rcode, 'NXDOMAIN')
  t.equal(a.authorities!.length, 1)
  await udpExchange(port, query('nx.allowed.example', 'A'))
  t.equal(upstreamCount('nx.allowed.example'), 1)
  now += 31_000 // min(SOA TTL 60, MINIMUM 30)
  await udpExchange(port, query('nx.allowed.example', 'A'))
  t.equal(upstreamCount('nx.allowed.example'), 2)
})

t.test('identical concurrent misses share one upstream query', async (t) => {
  const replies = await Promise.all(Array.from({ length: 5 }, (_, i) => udpExchange(port, query('slowish.allowed.example', 'A', { id: 100 + i }))))
  t.same(
    replies.map((r) => decode(r!).id),
    [100, 101, 102, 103, 104],
  )
  t.equal(upstreamCount('slowish.allowed.example'), 1)
})

t.test('TC from upstream is retried over TCP', async (t) => {
  const d = decode((await udpExchange(port, query('tc.allowed.example', 'A')))!)
  t.same(
    d.answers!.map((a) => (a as { data: unknown }).data),
    ['5.6.7.8'],
  )
  t.same(
    up.queries.filter((q) => q.name === 'tc.allowed.example').map((q) => q.transport),
    ['udp', 'tcp'],
  )
})

t.test('an answer too large for the client is truncated; dig falls back to TCP', { skip: noDig }, async (t) => {
  const raw = decode((await udpExchange(port, query('big.allowed.example', 'TXT')))!)
  t.ok(raw.flag_tc, 'TC for a 512-byte client')
  t.equal(raw.answers!.length, 0)
  const fits = decode((await udpExchange(port, query('big.allowed.example', 'TXT', { edns: true, udpSize: 4096 })))!)
  t.notOk(fits.flag_tc)
  t.equal(fits.answers!.length, 12)
  const r = await dig('dig', port, ['+noedns', 'big.allowed.example', 'TXT'])
  t.match(r.text, /Truncated, retrying in TCP mode/)
  t.equal(r.answers.length, 12)
})

t.test('rebinding protection: private answer → SERVFAIL + EDE 17; exempt name passes', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['private.allowed.example', 'A'])
  t.equal(r.status, 'SERVFAIL')
  t.match(r.ede, /^17 \(Filtered\)/)
  t.equal(await metric(s.registry, 'egressd_dns_rebind_blocked_total'), 1)
  t.match(
    s.logs.find((l) => l.verdict === 'rebind_blocked'),
    { name: 'private.allowed.example' },
  )
  const hit = await dig('dig', port, ['private.allowed.example', 'A'])
  t.equal(hit.status, 'SERVFAIL', 'also from the cache')
  const ex = await dig('dig', port, ['exempt.allowed.example', 'A'])
  t.equal(ex.status, 'NOERROR')
  t.same(ex.answers.map((a) => a[4]), ['192.168.1.10'])
  t.notOk(sinkCalls.some((c) => c.name === 'private.allowed.example'), 'sink not fed a filtered answer')
})

t.test('ANY gets the RFC 8482 HINFO, never an upstream query', { skip: noDig }, async (t) => {
  const r = await dig('dig', port, ['allowed.example', 'ANY'])
  t.equal(r.status, 'NOERROR')
  t.same(r.answers.map((a) => a.slice(3).join(' ')), ['HINFO "RFC8482" ""'])
  t.equal(up.queries.filter((q) => q.type === 'ANY').length, 0)
})

t.test('firewall sink: addresses after CNAMEs, answer waits for it, failures counted', async (t) => {
  sinkCalls.length = 0
  sinkDelay = 200
  const started = Date.now()
  const d = decode((await udpExchange(port, query('www.allowed.example', 'A')))!)
  t.ok(Date.now() - started >= 150, 'answer sent after the sink settled')
  t.equal(d.answers!.length, 1)
  t.match(sinkCalls, [{ name: 'www.allowed.example', rule: '*.allowed.example', addresses: [{ address: '93.184.216.34', family: 4, ttl: 300 }] }])
  sinkDelay = 0
  sinkCalls.length = 0
  await udpExchange(port, query('www.allowed.example', 'A'))
  t.equal(sinkCalls.length, 0, 'fresh hit: no refresh')
  now += 200_000 // 100 s left of 300
  await udpExchange(port, query('www.allowed.example', 'A'))
  await udpExchange(port, query('www.allowed.example', 'A'))
  t.match(sinkCalls, [{ addresses: [{ ttl: 100 }] }], 'one refresh with the remaining TTL')
  sinkFail = true
  const failed = decode((await udpExchange(port, query('allowed.example', 'AAAA')))!)
  sinkFail = false
  t.equal(failed.answers!.length, 1, 'answer still sent')
  t.equal(await metric(s.registry, 'egressd_dns_sink_errors_total'), 1)
})

t.test('resolver.lookup: CNAME chains, re-query, NXDOMAIN', async (t) => {
  const a = await s.svc.resolver.lookup('cname.allowed.example')
  t.same(a.v4, ['1.2.3.4'])
  t.same(a.v6, [])
  t.ok(a.ttl <= 50)
  const b = await s.svc.resolver.lookup('allowed.example')
  t.same([b.v4, b.v6], [['93.184.216.34'], ['2606:2800:220:1::1']])
  const c = await s.svc.resolver.lookup('cnameonly.allowed.example')
  t.same(c.v4, ['9.9.9.9'], 'chain ending without addresses re-queried')
  await t.rejects(s.svc.resolver.lookup('nope.elsewhere.example'), { code: 'ENXDOMAIN' })
  await t.rejects(s.svc.resolver.lookup('bad..name'), { code: 'EBADNAME' })
  const p = await s.svc.resolver.lookup('private.allowed.example')
  t.same(p.v4, ['10.0.0.5'], 'no rebinding check in lookup')
})

t.test('resolver.cachedAddresses: what lookup found, until the first answer it came from expires', async (t) => {
  const r = s.svc.resolver
  t.equal(r.cachedAddresses('never-looked-up.allowed.example'), undefined)
  // A 70 s; AAAA NODATA, negatively cached for the SOA MINIMUM of 60 s.
  const found = await r.lookup('chained.allowed.example')
  const start = now
  const sent = upstreamCount('chained.allowed.example')
  const hit = r.cachedAddresses('Chained.Allowed.Example')
  t.same(hit && [hit.v4, hit.v6], [found.v4, found.v6], 'case-insensitive, same addresses')
  now = start + 59_000
  t.ok(r.cachedAddresses('chained.allowed.example'), 'still fresh at 59 s')
  t.ok(r.cachedAddresses('chained.allowed.example')!.ttl <= 11, 'TTL aged from the A record')
  now = start + 60_000
  t.equal(r.cachedAddresses('chained.allowed.example'), undefined, 'gone when the NODATA expires, before the A record')
  t.equal(upstreamCount('chained.allowed.example'), sent, 'never a query of its own')
  await t.rejects(r.lookup('nope.elsewhere.example'), { code: 'ENXDOMAIN' })
  t.equal(r.cachedAddresses('nope.elsewhere.example'), undefined, 'failures are not remembered')
})

t.test('upstream SERVFAIL and silence → SERVFAIL to the client', async (t) => {
  const sf = decode((await udpExchange(port, query('servfail.allowed.example', 'A')))!)
  t.equal((sf as { rcode?: string }).rcode, 'SERVFAIL')
  const before = await metric(s.registry, 'egressd_dns_upstream_errors_total', 'reason="timeout"')
  const to = decode((await udpExchange(port, query('silent.allowed.example', 'A', { edns: true })))!)
  t.equal((to as { rcode?: string }).rcode, 'SERVFAIL')
  const opt = to.additionals![0] as dnsPacket.OptAnswer
  t.equal(opt.options[0]!.code, 15, 'EDE present')
  t.equal((opt.options[0] as { data: Buffer }).data.readUInt16BE(0), 22, 'No Reachable Authority')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', 'reason="timeout"'), before + 1)
})

t.test('reload swaps the policy atomically; listeners stay', async (t) => {
  const cfg = makeConfig({ upstreams: [up.hostPort] }, allow('other.example'))
  s.svc.update(compileConfig(cfg).dns)
  const d = decode((await udpExchange(port, query('allowed.example', 'A')))!)
  t.equal((d as { rcode?: string }).rcode, 'NXDOMAIN')
  const back = makeConfig({ upstreams: [up.hostPort], rebindExempt: allow('exempt.allowed.example') }, STANDARD_POLICY)
  s.svc.update(compileConfig(back).dns)
  const e = decode((await udpExchange(port, query('allowed.example', 'A')))!)
  t.equal(e.answers!.length, 1)
})

t.test('pipelined TCP queries answered as they complete', async (t) => {
  const c = await tcpClient(port)
  c.send(query('slowish2.allowed.example', 'A', { id: 1 })) // NXDOMAIN via upstream default
  c.send(query('nope.example', 'A', { id: 2 }))
  c.send(query('allowed.example', 'A', { id: 3 }))
  const ids = []
  for (let i = 0; i < 3; i++) ids.push(decode((await c.next())!).id)
  t.same([...ids].sort(), [1, 2, 3])
  t.equal(ids[0], 2, 'the blocked answer does not wait for the upstream one')
  c.sock.destroy()
})

t.test('REFUSED with EDE 18 for a client outside dns.clients', { skip: noDig }, async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], clients: [cidr('127.0.0.1/32')] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const outside = await dig('dig', r0.port, ['-b', '127.0.0.2', 'allowed.example', 'A'])
  t.equal(outside.status, 'REFUSED')
  t.match(outside.ede, /^18 \(Prohibited\)/)
  const inside = await dig('dig', r0.port, ['-b', '127.0.0.1', 'allowed.example', 'A'])
  t.equal(inside.status, 'NOERROR')
  t.equal(await metric(r0.registry, 'egressd_dns_queries_total', 'verdict="refused"'), 1)
})

t.test('blockResponse refused', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], blockResponse: 'refused' }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const d = decode((await udpExchange(r0.port, query('vendor.example', 'A')))!)
  t.equal((d as { rcode?: string }).rcode, 'REFUSED')
})

t.test('spoofed answers (wrong port, wrong question, wrong ID) ignored; the right one accepted', async (t) => {
  const real = dgram.createSocket('udp4')
  const spoofer = dgram.createSocket('udp4')
  await new Promise<void>((r) => real.bind(0, '127.0.0.1', () => r()))
  await new Promise<void>((r) => spoofer.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    real.close()
    spoofer.close()
  })
  const seen: { port: number; id: number; opt: dnsPacket.OptAnswer; rd: boolean }[] = []
  real.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg)
    seen.push({ port: rinfo.port, id: q.id!, opt: q.additionals![0] as dnsPacket.OptAnswer, rd: q.flag_rd! })
    const answer = (id: number, name: string, ip: string) =>
      dnsPacket.encode({ type: 'response', id, flags: dnsPacket.RECURSION_AVAILABLE, questions: [{ name, type: 'A', class: 'IN' }], answers: [{ type: 'A', name, ttl: 60, data: ip }] })
    const name = q.questions![0]!.name
    spoofer.send(answer(q.id!, name, '6.6.6.6'), rinfo.port, rinfo.address) // wrong source port
    real.send(answer(q.id!, 'evil.example', '6.6.6.7'), rinfo.port, rinfo.address) // wrong question
    real.send(answer((q.id! + 1) & 0xffff, name, '6.6.6.8'), rinfo.port, rinfo.address) // wrong ID
    setTimeout(() => real.send(answer(q.id!, name.toUpperCase(), '7.7.7.7'), rinfo.port, rinfo.address), 50)
  })
  const port0 = (real.address() as { port: number }).port
  const r0 = await startService(makeConfig({ upstreams: [{ host: '127.0.0.1', port: port0, family: 4 }] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const d = decode((await udpExchange(r0.port, query('spoof.allowed.example', 'A')))!)
  t.same(
    d.answers!.map((a) => (a as { data: unknown }).data),
    ['7.7.7.7'],
  )
  t.equal(await metric(r0.registry, 'egressd_dns_upstream_ignored_total', 'reason="source"'), 1)
  t.equal(await metric(r0.registry, 'egressd_dns_upstream_ignored_total', 'reason="question"'), 1)
  t.equal(await metric(r0.registry, 'egressd_dns_upstream_ignored_total', 'reason="id"'), 1)
  // What went upstream: our OPT (1232, the client's DO), RD, a fresh ID and source port per query.
  await udpExchange(r0.port, query('spoof2.allowed.example', 'A', { id: 0x1234, dnssec: true }))
  t.equal(seen.length, 2)
  t.equal(seen[0]!.opt.udpPayloadSize, 1232)
  t.equal(seen[0]!.opt.flag_do, false)
  t.equal(seen[1]!.opt.flag_do, true, 'DO copied from the client')
  t.same(seen[1]!.opt.options, [], 'client options not forwarded')
  t.ok(seen[0]!.rd && seen[1]!.rd)
  t.not(seen[0]!.port, seen[1]!.port, 'new source port per query')
  t.not(seen[1]!.id, 0x1234, 'upstream ID is ours, not the client\'s')
})

t.test('upstream timeout → next upstream; all silent → SERVFAIL', async (t) => {
  const dead = dgram.createSocket('udp4')
  let deadHits = 0
  dead.on('message', () => deadHits++)
  await new Promise<void>((r) => dead.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => dead.close())
  const deadHp = { host: '127.0.0.1', port: (dead.address() as { port: number }).port, family: 4 as const }
  const r0 = await startService(makeConfig({ upstreams: [deadHp, up.hostPort], upstreamTimeoutMs: 200 }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const d = decode((await udpExchange(r0.port, query('www.allowed.example', 'TXT')))!)
  t.equal((d as { rcode?: string }).rcode, 'NOERROR')
  t.equal(deadHits, 1)
  const r1 = await startService(makeConfig({ upstreams: [deadHp, deadHp], upstreamTimeoutMs: 150 }, STANDARD_POLICY))
  t.teardown(() => r1.close())
  const f = decode((await udpExchange(r1.port, query('www.allowed.example', 'A')))!)
  t.equal((f as { rcode?: string }).rcode, 'SERVFAIL')
  t.equal(deadHits, 3)
  await t.rejects(r1.svc.resolver.lookup('www.allowed.example'), { code: 'ETIMEOUT' })
})

t.test('maxPendingUpstream bounds outstanding upstream queries', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], maxPendingUpstream: 1 }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const slow = udpExchange(r0.port, query('slowish.allowed.example', 'TXT'))
  await new Promise((r) => setTimeout(r, 30))
  const fast = decode((await udpExchange(r0.port, query('www.allowed.example', 'A')))!)
  t.equal((fast as { rcode?: string }).rcode, 'SERVFAIL', 'over the bound: SERVFAIL at once')
  t.equal(await metric(r0.registry, 'egressd_dns_overload_total'), 1)
  t.equal((decode((await slow)!) as { rcode?: string }).rcode, 'NOERROR')
})

t.test('cache lifetime clamped by maxTtl and minTtl', async (t) => {
  let clock = 1_000_000
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], cache: { maxTtl: 10, minTtl: 0 } }, STANDARD_POLICY), { now: () => clock })
  t.teardown(() => r0.close())
  const name = 'txt.allowed.example' // TTL 60
  const before = upstreamCount(name)
  const ttlOf = async () => (decode((await udpExchange(r0.port, query(name, 'TXT')))!).answers![0] as { ttl: number }).ttl
  t.equal(await ttlOf(), 60, 'TTL relayed as the upstream gave it')
  clock += 9_000
  t.equal(await ttlOf(), 51, 'aged')
  t.equal(upstreamCount(name), before + 1)
  clock += 2_000
  t.equal(await ttlOf(), 60, 'past maxTtl: fetched again')
  t.equal(upstreamCount(name), before + 2)
  const r1 = await startService(makeConfig({ upstreams: [up.hostPort], cache: { minTtl: 120 } }, STANDARD_POLICY), { now: () => clock })
  t.teardown(() => r1.close())
  await udpExchange(r1.port, query('cname.allowed.example', 'AAAA'))
  const n = upstreamCount('cname.allowed.example')
  clock += 110_000 // beyond the 100 s TTL, within minTtl
  const aged = decode((await udpExchange(r1.port, query('cname.allowed.example', 'AAAA')))!)
  t.equal(upstreamCount('cname.allowed.example'), n, 'kept for minTtl')
  t.equal((aged.answers![0] as { ttl: number }).ttl, 0, 'TTL aged to 0, never negative')
})

t.test('IPv6 listener on [::1]', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], listen: [{ host: '::1', port: 0, family: 6 }] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  t.equal(r0.svc.boundAddresses.tcp[0]!.port, r0.port, 'UDP and TCP share the port')
  const d = decode((await udpExchange(r0.port, query('allowed.example', 'AAAA'), 1500, '::1'))!)
  t.same(
    d.answers!.map((a) => (a as { data: unknown }).data),
    ['2606:2800:220:1::1'],
  )
})

t.test('a TCP connection with more queries than the per-connection bound is throttled, not dropped', async (t) => {
  const c = await tcpClient(port)
  const n = 48 // > 32 pending per connection
  for (let i = 0; i < n; i++) c.send(query(`q${i}.slow.allowed.example`, 'A', { id: 1000 + i }))
  const ids = new Set<number>()
  for (let i = 0; i < n; i++) {
    const f = await c.next(3000)
    if (f === null) break
    ids.add(decode(f).id!)
  }
  t.equal(ids.size, n, 'every query answered')
  c.sock.destroy()
})
