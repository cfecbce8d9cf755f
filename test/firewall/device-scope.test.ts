/**
 * Scope `device`: elements keyed by the client that asked, the bounds per device and in
 * total (with the deletes they cause in the scripts), reading the sets back at start,
 * and the AnswerFeed calling a per-client sink for every answer.
 */
import t from 'tap'
import { Registry } from 'prom-client'
import { NftablesSink } from '../../src/firewall/nftables-sink.js'
import { DeviceElements } from '../../src/firewall/device-elements.js'
import { batchScript, declareScript, parseSetListing, retireScripts } from '../../src/firewall/nft-script.js'
import { AnswerFeed, type AllowedAnswer } from '../../src/dns/answer-sink.js'
import type { StoredAnswer } from '../../src/dns/cache.js'
import { captureLogger, FakeRunner, rule, tick } from './helpers.js'

const CFG = { enabled: true, table: 'egressd', graceSeconds: 60, scope: 'device' as const, deviceKey: 'address' as const, maxElementsPerDevice: 1024, maxElements: 65_536 }
const A = '192.168.77.2'
const B = '192.168.77.3'
const A6 = 'fd77::2'

function setup(opts: { now?: () => number; perDevice?: number; total?: number; runner?: FakeRunner } = {}) {
  const runner = opts.runner ?? new FakeRunner()
  const registry = new Registry()
  const { log, lines } = captureLogger()
  const cfg = { ...CFG, maxElementsPerDevice: opts.perDevice ?? CFG.maxElementsPerDevice, maxElements: opts.total ?? CFG.maxElements }
  const sink = new NftablesSink(cfg, { log, registry, runner, now: opts.now })
  return { runner, registry, sink, lines }
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  const v = m.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val))
  return v?.value ?? NaN
}

const NTP = rule([{ port: 123, proto: 'udp' }], 'ntp.example')
const v4 = (address: string, ttl = 100) => ({ address, family: 4 as const, ttl })

t.test('declare and retire scripts of scope device, exact text', async (t) => {
  t.equal(
    declareScript('egressd', 'device'),
    'add table inet egressd\n' +
      'add set inet egressd allow4_dev { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags timeout; }\n' +
      'add set inet egressd allow6_dev { type ipv6_addr . ipv6_addr . inet_proto . inet_service; flags timeout; }\n',
  )
  const r = retireScripts('egressd', 'device')
  t.match(r.empty, /flush set inet egressd allow4\n/)
  t.match(r.empty, /flush set inet egressd allow6\n/)
  t.same(r.remove, ['delete set inet egressd allow4\ndelete set inet egressd allow6\n', 'delete set inet egressd allow4_mac\ndelete set inet egressd allow6_mac\n'], 'one run per other group: a rule naming one pair must not keep the other')
})

t.test('start in scope device: declares its sets, empties the shared ones, logs the scope', async (t) => {
  const { runner, sink, lines } = setup()
  await sink.start()
  t.equal(runner.scripts[0], declareScript('egressd', 'device'))
  t.match(runner.scripts[1], /flush set inet egressd allow4\n/)
  t.notMatch(runner.scripts.join(''), /(flush|delete) set inet egressd allow[46]_dev/, 'its own sets are never flushed or deleted')
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { scope: 'device', sets: ['allow4_dev', 'allow6_dev'] })
})

t.test('elements are keyed by the device that asked; another device gets its own', async (t) => {
  const { runner, sink, registry } = setup()
  await sink.add('ntp.example', NTP, [v4('198.18.1.20'), { address: '2001:db8:1::20', family: 6, ttl: 30 }], A6)
  await sink.add('ntp.example', NTP, [v4('198.18.1.20')], A)
  t.equal(runner.scripts.length, 2)
  t.equal(
    runner.scripts[0],
    'add element inet egressd allow6_dev { fd77::2 . 2001:db8:1::20 . udp . 123 timeout 90s }\n' +
      'delete element inet egressd allow6_dev { fd77::2 . 2001:db8:1::20 . udp . 123 }\n' +
      'add element inet egressd allow6_dev { fd77::2 . 2001:db8:1::20 . udp . 123 timeout 90s }\n',
    'the IPv4 address of an answer to an IPv6 device is not written',
  )
  t.equal(await metric(registry, 'egressd_firewall_cross_family_total'), 1, 'and counted')
  t.match(runner.scripts[1], /^add element inet egressd allow4_dev \{ 192\.168\.77\.2 \. 198\.18\.1\.20 \. udp \. 123 timeout 160s \}\n/)

  await sink.add('ntp.example', NTP, [v4('198.18.1.20')], A)
  t.equal(runner.scripts.length, 2, 'the same device again: deduped')
  await sink.add('ntp.example', NTP, [v4('198.18.1.20')], B)
  t.equal(runner.scripts.length, 3, 'another device: written for it')
  t.match(runner.scripts[2], /192\.168\.77\.3 \. 198\.18\.1\.20 \. udp \. 123 timeout 160s/)
  t.equal(sink.elementsOf(A), 1)
  t.equal(sink.elementsOf(B), 1)
  t.equal(sink.knownSize, 3)
  t.equal(await metric(registry, 'egressd_firewall_devices'), 3)
  t.equal(await metric(registry, 'egressd_firewall_elements'), 3)
})

t.test('an answer without a usable client opens nothing in scope device', async (t) => {
  const { runner, sink, registry } = setup()
  await sink.add('ntp.example', NTP, [v4('198.18.1.20')])
  await sink.add('ntp.example', NTP, [v4('198.18.1.20')], '192.168.77.2 . 0.0.0.0')
  await sink.add('ntp.example', NTP, [v4('198.18.1.20')], 'fe80::1%lan0')
  t.equal(runner.scripts.length, 0)
  t.equal(await metric(registry, 'egressd_firewall_errors_total', { reason: 'invalid_address' }), 3)
})

t.test('refresh follows each device\'s own clock: more than half left is skipped', async (t) => {
  let now = 1_000_000
  const { runner, sink } = setup({ now: () => now })
  await sink.add('ntp.example', NTP, [v4('198.18.1.20', 40)], A) // 100 s
  now += 30_000
  await sink.add('ntp.example', NTP, [v4('198.18.1.20', 10)], B) // B's first: written
  now += 25_000 // A: 45 s left of 100 → refresh; B: 45 s left of 70 → skip
  await sink.add('ntp.example', NTP, [v4('198.18.1.20', 40)], A)
  await sink.add('ntp.example', NTP, [v4('198.18.1.20', 10)], B)
  t.equal(runner.scripts.length, 3)
  t.match(runner.scripts[2], /192\.168\.77\.2 \. 198\.18\.1\.20 \. udp \. 123 timeout 100s/)
  t.notMatch(runner.scripts[2], /192\.168\.77\.3/)
})

t.test('per-device bound: the device\'s oldest element is deleted, counted, and the answer still resolves', async (t) => {
  const { runner, sink, registry } = setup({ perDevice: 3 })
  for (let i = 1; i <= 3; i++) await sink.add('n.example', NTP, [v4(`198.18.1.${i}`)], A)
  await sink.add('n.example', NTP, [v4('198.18.1.50')], B)
  await t.resolves(sink.add('n.example', NTP, [v4('198.18.1.4')], A))
  t.equal(sink.elementsOf(A), 3)
  t.equal(sink.elementsOf(B), 1, 'the other device keeps its element')
  t.equal(await metric(registry, 'egressd_firewall_evicted_total', { bound: 'device' }), 1)
  const s = runner.scripts.at(-1)!
  t.equal(
    s,
    'add element inet egressd allow4_dev { 192.168.77.2 . 198.18.1.4 . udp . 123 timeout 160s, 192.168.77.2 . 198.18.1.1 . udp . 123 timeout 1s }\n' +
      'delete element inet egressd allow4_dev { 192.168.77.2 . 198.18.1.4 . udp . 123, 192.168.77.2 . 198.18.1.1 . udp . 123 }\n' +
      'add element inet egressd allow4_dev { 192.168.77.2 . 198.18.1.4 . udp . 123 timeout 160s }\n',
    'the evicted element is added with 1 s first, so its delete cannot fail if it expired already',
  )
  // The oldest is by write order: refreshing 198.18.1.2 makes 198.18.1.3 the oldest.
  const { runner: r2, sink: s2 } = setup({ perDevice: 2, now: (() => { let n = 0; return () => (n += 60_000) })() })
  await s2.add('n.example', NTP, [v4('198.18.1.2', 0)], A)
  await s2.add('n.example', NTP, [v4('198.18.1.3', 1000)], A)
  await s2.add('n.example', NTP, [v4('198.18.1.2', 1000)], A) // refresh (60 s timeout, 60 s passed)
  await s2.add('n.example', NTP, [v4('198.18.1.9', 1000)], A)
  t.match(r2.scripts.at(-1), /198\.18\.1\.3 \. udp \. 123 timeout 1s/, 'the element written longest ago goes')
})

t.test('total bound: the oldest element of the device holding the most goes first', async (t) => {
  const { runner, sink, registry } = setup({ perDevice: 10, total: 4 })
  for (let i = 1; i <= 3; i++) await sink.add('n.example', NTP, [v4(`198.18.1.${i}`)], A)
  await sink.add('n.example', NTP, [v4('198.18.2.1')], B)
  await sink.add('n.example', NTP, [v4('198.18.2.2')], B)
  t.equal(await metric(registry, 'egressd_firewall_evicted_total', { bound: 'total' }), 1)
  t.equal(sink.elementsOf(A), 2, 'A, holding the most, lost its oldest')
  t.equal(sink.elementsOf(B), 2)
  t.match(runner.scripts.at(-1), /192\.168\.77\.2 \. 198\.18\.1\.1 \. udp \. 123 timeout 1s/)
  t.equal(sink.knownSize, 4)
})

t.test('an element evicted before its batch ran is not written, and deleted; asked again in that batch, it is kept', async (t) => {
  const runner = new FakeRunner()
  runner.auto = false
  const { sink, registry } = setup({ perDevice: 2, runner })
  void sink.add('x.example', NTP, [v4('198.18.9.9')], B)
  await tick() // batch 1 running
  const p = [
    sink.add('n.example', NTP, [v4('198.18.1.1')], A),
    sink.add('n.example', NTP, [v4('198.18.1.2')], A),
    sink.add('n.example', NTP, [v4('198.18.1.3')], A), // evicts .1 while it is queued
  ]
  runner.release()
  await tick()
  const s = runner.scripts[1]!
  t.equal(s.match(/198\.18\.1\.1 \. udp \. 123 timeout 160s/g), null, 'the evicted element is never written with its timeout')
  t.match(s, /delete element inet egressd allow4_dev \{ [^}]*192\.168\.77\.2 \. 198\.18\.1\.1 \. udp \. 123 \}/)
  runner.release()
  await Promise.all(p)
  t.equal(await metric(registry, 'egressd_firewall_elements_added_total', { family: 'ipv4' }), 3, 'B\'s one and A\'s two: the evicted one is not counted')

  void sink.add('x.example', NTP, [v4('198.18.9.8')], B)
  await tick()
  const q = [
    sink.add('n.example', NTP, [v4('198.18.1.4')], A), // evicts .2
    sink.add('n.example', NTP, [v4('198.18.1.2')], A), // .2 again: evicts .3, and .2 must not be deleted
  ]
  runner.release()
  await tick()
  const s2 = runner.scripts[3]!
  t.notMatch(s2, /delete element[^\n]*198\.18\.1\.2 \. udp \. 123(?! timeout)[^\n]*198\.18\.1\.2/, 'no duplicate delete')
  t.match(s2, /\nadd element inet egressd allow4_dev \{ [^}]*198\.18\.1\.2 \. udp \. 123 timeout 160s/, '.2 ends present: the last add writes it')
  t.match(s2, /198\.18\.1\.3 \. udp \. 123 timeout 1s/, '.3 evicted')
  runner.release()
  await Promise.all(q)
  t.equal(sink.elementsOf(A), 2)
})

t.test('expired elements make room without an eviction', async (t) => {
  let now = 0
  const { sink, registry } = setup({ perDevice: 2, now: () => now })
  await sink.add('n.example', NTP, [v4('198.18.1.1', 0)], A) // 60 s
  await sink.add('n.example', NTP, [v4('198.18.1.2', 0)], A)
  now = 61_000
  await sink.add('n.example', NTP, [v4('198.18.1.3', 0)], A)
  t.equal(await metric(registry, 'egressd_firewall_evicted_total', { bound: 'device' }), 0)
  t.equal(sink.elementsOf(A), 1)
})

t.test('DeviceElements alone: counts, victims, expired heads', async (t) => {
  const b = new DeviceElements(2, 3)
  const e = (expiresAt: number) => ({ expiresAt, batch: null, index: 0, v4: true })
  b.set('a', 'k1', e(100))
  b.set('a', 'k2', e(200))
  t.same(b.victim('a', 0), { client: 'a', key: 'k1', element: e(100), bound: 'device' })
  t.equal(b.victim('b', 0), null)
  b.set('b', 'k3', e(100))
  t.match(b.victim('c', 0), { client: 'a', key: 'k1', bound: 'total' })
  t.equal(b.victim('c', 150), null, 'a\'s expired head dropped, room made without a victim')
  t.equal(b.size, 2)
  b.set('a', 'k2', e(300))
  t.equal(b.size, 2, 'set again: not counted twice')
  b.delete('a', 'k2')
  b.delete('a', 'nothing')
  t.equal(b.deviceCount, 1)
  t.same([...b.entries()].map(([c, k]) => `${c} ${k}`), ['b k3'])
})

/** A runner that also answers `query` with a listing of the device sets. */
class ListingRunner extends FakeRunner {
  constructor(private readonly sets: Record<string, string>) {
    super()
  }
  query(args: readonly string[], maxBytes?: number): Promise<string> {
    t.ok(maxBytes === undefined || maxBytes >= 1 << 20)
    const set = args.at(-1)!
    if (set in this.sets) return Promise.resolve(this.sets[set]!)
    return Promise.reject(new Error('nft: not a listing this test knows'))
  }
}

const devListing = (elems: Array<[string, string, string, number, number]>) =>
  JSON.stringify({ nftables: [{ metainfo: {} }, { set: { name: 's', elem: elems.map(([c, a, p, port, expires]) => ({ elem: { val: { concat: [c, a, p, port] }, timeout: 300, expires } })) } }] })

t.test('restart: the device sets are read back, counted in the bounds, and trimmed to them', async (t) => {
  const runner = new ListingRunner({
    allow4_dev: devListing([
      [A, '198.18.1.1', 'udp', 123, 50],
      [A, '198.18.1.2', 'udp', 123, 200],
      [A, '198.18.1.3', 'udp', 123, 100],
      [B, '198.18.1.1', 'udp', 123, 250],
    ]),
    allow6_dev: devListing([[A6, '2001:db8::1', 'tcp', 443, 20]]),
  })
  const { sink, registry, lines } = setup({ perDevice: 2, runner })
  await sink.start()
  await tick()
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { reconciled: 5 })
  t.equal(sink.elementsOf(A), 2, 'A had 3, the bound is 2')
  t.equal(sink.elementsOf(B), 1)
  t.equal(sink.elementsOf(A6), 1)
  t.equal(await metric(registry, 'egressd_firewall_evicted_total', { bound: 'device' }), 1)
  const trim = runner.scripts.find((s) => s.includes('delete element'))
  t.equal(
    trim,
    'add element inet egressd allow4_dev { 192.168.77.2 . 198.18.1.1 . udp . 123 timeout 1s }\n' + 'delete element inet egressd allow4_dev { 192.168.77.2 . 198.18.1.1 . udp . 123 }\n',
    'the element expiring soonest went',
  )
  // Read back means deduped: an answer for an element with most of its time left writes nothing.
  const before = runner.scripts.length
  await sink.add('n.example', NTP, [v4('198.18.1.2', 200)], A)
  t.equal(runner.scripts.length, before)
})

t.test('parseSetListing skips what it cannot read', async (t) => {
  t.same(parseSetListing('not json'), [])
  t.same(parseSetListing('{"nftables":[{"set":{"elem":[null, {"elem":{"val":{"concat":[{"x":1}]}}}, {"elem":{"val":{"concat":["a",1]}}}]}}]}'), [{ parts: ['a', 1], expires: 0 }])
})

t.test('batchScript in add mode with evictions: add (evicted with 1 s), then delete them', async (t) => {
  t.equal(
    batchScript('fw', { keys: ['a . b . udp . 1', 'gone'], timeouts: [61, 0], evict: ['c . d . udp . 2'] }, { keys: [], timeouts: [] }, false, 'add', 'device'),
    'add element inet fw allow4_dev { a . b . udp . 1 timeout 61s, c . d . udp . 2 timeout 1s }\n' + 'delete element inet fw allow4_dev { c . d . udp . 2 }\n',
  )
})

t.test('AnswerFeed with a per-client sink: every client, every hit; synchronous when nothing is to wait for', async (t) => {
  const calls: AllowedAnswer[] = []
  let result: Promise<void> | undefined
  const sink = Object.assign((a: AllowedAnswer) => {
    calls.push(a)
    return result
  }, { perClient: true })
  const errors: unknown[] = []
  const feed = new AnswerFeed(sink, (err) => errors.push(err))
  const entry = { lifetime: 100 } as unknown as StoredAnswer
  const answer = (client: string) => () => ({ name: 'ntp.example', rule: NTP, client, addresses: [v4('198.18.1.20')] })
  result = Promise.resolve()
  t.ok(feed.fresh(entry, answer(A)) instanceof Promise)
  t.ok(feed.fresh(entry, answer(B)) instanceof Promise, 'a second client waiting on the same upstream answer gets its own call')
  result = undefined
  t.equal(feed.hit(entry, 1, answer(B)), null, 'a hit early in the entry\'s life still reaches the sink; nothing to wait for: null')
  t.same(calls.map((c) => c.client), [A, B, B])
  result = Promise.reject(new Error('boom'))
  await feed.hit(entry, 1, answer(A))
  t.equal(errors.length, 1, 'a rejection is reported, not thrown')
  const throwing = Object.assign(() => {
    throw new Error('sync boom')
  }, { perClient: true })
  t.equal(new AnswerFeed(throwing, (err) => errors.push(err)).hit(entry, 1, answer(A)), null)
  t.equal(errors.length, 2)

  // The shared feed is unchanged: one call per upstream answer, a hit only late in life.
  const shared: string[] = []
  const f2 = new AnswerFeed((a) => void shared.push(a.client), () => {})
  await f2.fresh(entry, answer(A))
  await f2.fresh(entry, answer(B))
  t.equal(f2.hit(entry, 1, answer(B)), null)
  t.same(shared, [A])
})

t.test('answerSink(): perClient follows the scope; nothing to wait for is undefined', async (t) => {
  const { sink } = setup()
  const f = sink.answerSink()
  t.equal(f.perClient, true)
  const first = f({ name: 'ntp.example', rule: NTP, client: A, addresses: [v4('198.18.1.20')] })
  t.ok(first instanceof Promise)
  await first
  t.equal(f({ name: 'ntp.example', rule: NTP, client: A, addresses: [v4('198.18.1.20')] }), undefined, 'deduped: a synchronous answer')
  const shared = new NftablesSink({ ...CFG, scope: 'shared' }, { log: captureLogger().log, registry: new Registry(), runner: new FakeRunner() })
  t.equal(shared.answerSink().perClient, false)
})

t.test('update: bounds are reloaded, a scope change is refused with a log line', async (t) => {
  const { sink, lines } = setup({ perDevice: 5 })
  sink.update({ ...CFG, scope: 'shared', maxElementsPerDevice: 1 })
  t.equal(sink.scope, 'device')
  t.ok(lines.some((l) => /scope changes need a restart/.test(String(l.msg))))
  await sink.add('n.example', NTP, [v4('198.18.1.1')], A)
  await sink.add('n.example', NTP, [v4('198.18.1.2')], A)
  t.equal(sink.elementsOf(A), 1, 'the new per-device bound applies')
})
