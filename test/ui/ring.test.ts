import t from 'tap'
import { Registry } from 'prom-client'
import { DnsMetrics } from '../../src/dns/metrics.js'
import type { DecisionEvent } from '../../src/log/decision.js'
import { EventRing, top } from '../../src/ui/event-ring.js'
import { rates, readRegistry, SampleRing, type Reading } from '../../src/ui/sampler.js'
import { allow, fakeUpstream, makeConfig, query, standardZone, startService, udpExchange } from '../dns/helpers.js'

const ev = (name: string, client = '10.0.0.1'): DecisionEvent => ({
  protocol: 'dns', client, name, type: 'A', verdict: 'blocked', rule: null, reason: 'not_allowed', group: 'default', mode: 'enforce',
})

t.test('the ring keeps the newest `capacity` events, numbered, oldest first', async (t) => {
  let now = 1000
  const ring = new EventRing(3, () => now++)
  t.equal(ring.size, 0)
  t.same(ring.since(0), [])
  for (const n of ['a', 'b', 'c', 'd', 'e']) ring.push(ev(n))
  t.equal(ring.size, 3, 'bounded by capacity')
  t.equal(ring.lastSeq, 5)
  t.same(ring.since(0).map((e) => [e.seq, e.name, e.time]), [[3, 'c', 1002], [4, 'd', 1003], [5, 'e', 1004]])
  t.same(ring.since(4).map((e) => e.name), ['e'], 'after a sequence number')
  t.same(ring.since(5), [], 'nothing newer')
  t.same(ring.since(1).map((e) => e.seq), [3, 4, 5], 'a client that missed more than the ring holds gets what is left')
  t.same(ring.since(0, 2).map((e) => e.seq), [4, 5], 'limit keeps the newest')
})

t.test('resize keeps the newest events that fit, and their numbers', async (t) => {
  const ring = new EventRing(4)
  for (const n of ['a', 'b', 'c', 'd', 'e', 'f']) ring.push(ev(n))
  ring.resize(2)
  t.same(ring.since(0).map((e) => [e.seq, e.name]), [[5, 'e'], [6, 'f']])
  ring.push(ev('g'))
  t.same(ring.since(0).map((e) => e.name), ['f', 'g'])
  ring.resize(5)
  t.equal(ring.size, 2, 'growing keeps what was there, nothing invented')
  for (const n of ['h', 'i', 'j', 'k']) ring.push(ev(n))
  t.same(ring.since(0).map((e) => e.name), ['g', 'h', 'i', 'j', 'k'])
  t.same(ring.since(8).map((e) => e.seq), [9, 10, 11])
})

t.test('listeners see each push until they unsubscribe', async (t) => {
  const ring = new EventRing(2)
  const seen: number[] = []
  const off = ring.subscribe((e) => seen.push(e.seq))
  ring.push(ev('a'))
  ring.push(ev('b'))
  off()
  ring.push(ev('c'))
  t.same(seen, [1, 2])
})

t.test('top counts a key over the events, most frequent first, ties by value', async (t) => {
  const ring = new EventRing(10)
  for (const [n, c] of [['x', '1'], ['y', '2'], ['x', '2'], ['z', '2'], ['x', '3']]) ring.push(ev(n!, c))
  const events = ring.since(0)
  t.same(top(events, (e) => e.name, 2), [{ key: 'x', count: 3 }, { key: 'y', count: 1 }])
  t.same(top(events, (e) => e.client, 5), [{ key: '2', count: 3 }, { key: '1', count: 1 }, { key: '3', count: 1 }])
})

const reading = (time: number, o: Partial<Reading> = {}): Reading => ({
  time, dnsAllowed: 0, dnsBlocked: 0, dnsWouldBlock: 0, cacheHits: 0, cacheMisses: 0, upstream: {}, upstreamErrors: {},
  sniAllowed: 0, sniBlocked: 0, sniWouldBlock: 0, sniActive: 0, cacheEntries: 0, ...o,
})

t.test('a sample is the rates between two readings', async (t) => {
  const a = reading(0, { dnsAllowed: 10, dnsBlocked: 5, cacheHits: 2, cacheMisses: 2, upstream: { udp: { count: 2, sum: 0.02 } }, upstreamErrors: { timeout: 1 } })
  const b = reading(5000, { dnsAllowed: 60, dnsBlocked: 30, cacheHits: 11, cacheMisses: 3, upstream: { udp: { count: 4, sum: 0.08 }, tcp: { count: 0, sum: 0 } }, upstreamErrors: { timeout: 6, servfail: 0 }, sniActive: 7 })
  const s = rates(a, b)
  t.equal(s.dnsAllowed, 10, '50 in 5 s')
  t.equal(s.dnsBlocked, 5)
  t.equal(s.cacheHitRatio, 0.9, '9 hits of 10 lookups')
  t.same(s.upstreamMs, { udp: 30, tcp: null }, 'mean over the interval; null when nothing was measured')
  t.same(s.upstreamErrors, { timeout: 1 }, 'reasons with no error are left out')
  t.equal(s.sniActive, 7, 'a gauge is taken as read')
  t.equal(rates(b, reading(10_000)).cacheHitRatio, null, 'no lookups: no ratio')
  t.equal(rates(b, reading(10_000, { dnsAllowed: 20 })).dnsAllowed, 4, 'a counter that went back counts from 0')
})

t.test('the sample ring drops the oldest beyond its capacity', async (t) => {
  const r = new SampleRing(3)
  for (let i = 1; i <= 5; i++) r.add(rates(reading(0), reading(i * 1000)))
  t.same(r.all().map((s) => s.t), [3000, 4000, 5000])
  t.equal(r.latest?.t, 5000)
})

t.test('the DNS tap sees exactly the decision lines written: a flood is cut by the log limit, not by the ring', async (t) => {
  const tapped: DecisionEvent[] = []
  const s = await startService(makeConfig({}, allow('ok.example')), { tap: (e) => tapped.push(e) })
  t.teardown(() => s.close())
  // 150 blocked queries in well under a second: the handler logs 100 per second.
  const sends: Promise<Buffer | null>[] = []
  for (let i = 0; i < 150; i++) sends.push(udpExchange(s.port, query(`n${i}.blocked.example`, 'A', { id: i + 1 })))
  await Promise.all(sends)
  const lines = s.logs.filter((l) => l.msg === 'dns query blocked')
  t.ok(lines.length >= 100 && lines.length < 150, `the limit held lines back (${lines.length} written)`)
  t.equal(tapped.length, lines.length, 'one tapped event per written line')
  t.same(tapped.map((e) => e.name).sort(), lines.map((l) => l.name).sort())
  // An allowed query at debug level is a line too, and reaches the tap; with no upstream
  // configured its SERVFAIL is a line as well.
  await udpExchange(s.port, query('ok.example', 'A'))
  t.same(tapped.slice(-2).map((e) => [e.name, e.verdict, e.reason]), [['ok.example', 'allowed', null], ['ok.example', 'upstream_error', 'no_upstreams']])
})

t.test('every kind of DNS decision line reaches the tap: CNAME blocks and rebinding blocks too', async (t) => {
  const tapped: DecisionEvent[] = []
  const up = await fakeUpstream(standardZone)
  t.teardown(() => up.close())
  // cname.allowed.example aliases target.elsewhere.example, which this policy does not allow.
  const s = await startService(makeConfig({ upstreams: [up.hostPort] }, allow('cname.allowed.example', 'private.allowed.example')), { tap: (e) => tapped.push(e) })
  t.teardown(() => s.close())
  await udpExchange(s.port, query('cname.allowed.example', 'A'))
  await udpExchange(s.port, query('private.allowed.example', 'A'))
  const written = s.logs.filter((l) => l.reason === 'cname_blocked' || l.verdict === 'rebind_blocked')
  t.equal(written.length, 2, 'both lines were written')
  t.match(tapped.find((e) => e.reason === 'cname_blocked'), { name: 'cname.allowed.example', cname: 'target.elsewhere.example' }, 'the CNAME block reached the tap')
  t.match(tapped.find((e) => e.verdict === 'rebind_blocked'), { name: 'private.allowed.example' }, 'the rebinding block reached the tap')
})

t.test('per-upstream rows: latency and errors per configured upstream, transports summed over upstreams', async (t) => {
  const registry = new Registry()
  const m = new DnsMetrics(registry, { cacheEntries: () => 0, cacheBytes: () => 0, pendingUpstream: () => 0, tcpConnections: () => 0 })
  m.keepUpstreams(['9.9.9.9:53', 'tls://1.1.1.1#one.one.one.one', 'https://dns.example/dns-query#192.0.2.1'])
  const a = await readRegistry(registry, 0)
  m.observeUpstream('udp', '9.9.9.9:53', 0.01)
  m.observeUpstream('udp', '9.9.9.9:53', 0.03)
  m.observeUpstream('tls', 'tls://1.1.1.1#one.one.one.one', 0.02)
  m.upstreamErrors.inc('https://dns.example/dns-query#192.0.2.1', 'certificate', 5)
  m.upstreamErrors.inc('9.9.9.9:53', 'timeout', 5)
  const b = await readRegistry(registry, 5000)
  const s = rates(a, b)
  t.same(s.upstreams, {
    '9.9.9.9:53': { transport: 'udp', ms: 20, errors: 1 },
    'tls://1.1.1.1#one.one.one.one': { transport: 'tls', ms: 20, errors: 0 },
    'https://dns.example/dns-query#192.0.2.1': { transport: 'https', ms: null, errors: 1 },
  })
  t.same(s.upstreamErrors, { timeout: 1, certificate: 1 }, 'by reason, summed over upstreams')
  t.same(s.upstreamMs, { udp: 20, tls: 20 })
})
