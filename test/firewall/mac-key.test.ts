/**
 * Scope device with `device_key: mac`: elements keyed by the MAC the neighbour table
 * holds for the client, so an IPv4 device gets its AAAA answers' elements and the
 * reverse; no entry (not on-link) writes nothing; bounds count per MAC across families;
 * restarts read MAC-keyed sets back. nft is a recording fake here; the kernel side is
 * in nftables-real.test.ts and test/e2e/gateway-netns.test.ts.
 */
import t from 'tap'
import { Registry } from 'prom-client'
import { NftablesSink } from '../../src/firewall/nftables-sink.js'
import { declareScript, retireScripts, setGroup } from '../../src/firewall/nft-script.js'
import { NeighbourTable, type NeighbourSource } from '../../src/firewall/neighbours.js'
import { captureLogger, FakeRunner, rule, tick } from './helpers.js'

const CFG = { enabled: true, table: 'egressd', graceSeconds: 60, scope: 'device' as const, deviceKey: 'mac' as const, maxElementsPerDevice: 1024, maxElements: 65_536 }
const MAC_A = '02:00:00:00:00:0a'
const MAC_B = '02:00:00:00:00:0b'
const ARP = `IP address       HW type     Flags       HW address            Mask     Device
192.168.77.2     0x1         0x2         02:00:00:00:00:0A     *        lan0
192.168.77.3     0x1         0x2         ${MAC_B}     *        lan0
`
const NEIGH6 = JSON.stringify([
  { dst: 'fd77::2', dev: 'lan0', lladdr: MAC_A, state: ['STALE'] },
  // A privacy address of the same device: same MAC, so the same elements.
  { dst: 'fd77::5c1:9a2b:11f0:7e3d', dev: 'lan0', lladdr: MAC_A, state: ['REACHABLE'] },
])

class Source implements NeighbourSource {
  reads = 0
  read(family: 4 | 6): Promise<string> {
    this.reads++
    return Promise.resolve(family === 4 ? ARP : NEIGH6)
  }
}

class ListingRunner extends FakeRunner {
  constructor(private readonly sets: Record<string, string>) {
    super()
  }
  query(args: readonly string[]): Promise<string> {
    const set = args.at(-1)!
    if (set in this.sets) return Promise.resolve(this.sets[set]!)
    return Promise.reject(new Error('nft: not a listing this test knows'))
  }
}

function setup(opts: { now?: () => number; perDevice?: number; runner?: FakeRunner } = {}) {
  const runner = opts.runner ?? new FakeRunner()
  const registry = new Registry()
  const { log, lines } = captureLogger()
  const now = opts.now ?? Date.now
  const source = new Source()
  const neighbours = new NeighbourTable(source, now)
  const sink = new NftablesSink({ ...CFG, maxElementsPerDevice: opts.perDevice ?? 1024 }, { log, registry, runner, now, neighbours })
  return { runner, registry, sink, lines, source }
}

async function metric(registry: Registry, name: string): Promise<number> {
  return (await registry.getSingleMetric(name)!.get()).values[0]?.value ?? NaN
}

const NTP = rule([{ port: 123, proto: 'udp' }], 'ntp.example')
const v4 = (address: string, ttl = 100) => ({ address, family: 4 as const, ttl })
const v6 = (address: string, ttl = 100) => ({ address, family: 6 as const, ttl })

t.test('declare and retire scripts of device_key mac, exact text', async (t) => {
  t.equal(setGroup('device', 'mac'), 'mac')
  t.equal(setGroup('device', 'address'), 'device')
  t.equal(setGroup('shared', 'mac'), 'shared', 'device_key means nothing in scope shared')
  t.equal(
    declareScript('egressd', 'mac'),
    'add table inet egressd\n' +
      'add set inet egressd allow4_mac { type ether_addr . ipv4_addr . inet_proto . inet_service; flags timeout; }\n' +
      'add set inet egressd allow6_mac { type ether_addr . ipv6_addr . inet_proto . inet_service; flags timeout; }\n',
  )
  const r = retireScripts('egressd', 'mac')
  t.match(r.empty, /flush set inet egressd allow4\n[^]*flush set inet egressd allow6_dev\n/)
  t.notMatch(r.empty, /_mac/, 'its own sets are never flushed')
  t.same(r.remove, ['delete set inet egressd allow4\ndelete set inet egressd allow6\n', 'delete set inet egressd allow4_dev\ndelete set inet egressd allow6_dev\n'])
})

t.test('start with device_key mac: declares the MAC sets, retires the others, logs the key', async (t) => {
  const { runner, sink, lines } = setup()
  await sink.start()
  t.equal(runner.scripts[0], declareScript('egressd', 'mac'))
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { scope: 'device', deviceKey: 'mac', sets: ['allow4_mac', 'allow6_mac'] })
})

t.test('cross-family: an IPv4 client gets its AAAA answer, an IPv6 client its A answer, both keyed by one MAC', async (t) => {
  const { runner, sink, registry } = setup()
  await sink.add('ntp.example', NTP, [v6('2001:db8:1::20', 30)], '192.168.77.2')
  t.equal(
    runner.scripts[0],
    'add element inet egressd allow6_mac { 02:00:00:00:00:0a . 2001:db8:1::20 . udp . 123 timeout 90s }\n' +
      'delete element inet egressd allow6_mac { 02:00:00:00:00:0a . 2001:db8:1::20 . udp . 123 }\n' +
      'add element inet egressd allow6_mac { 02:00:00:00:00:0a . 2001:db8:1::20 . udp . 123 timeout 90s }\n',
    'the AAAA answer to a device that asked over IPv4 opens the IPv6 address for its MAC',
  )
  await sink.add('ntp.example', NTP, [v4('198.18.1.20', 40)], 'fd77::2')
  t.match(runner.scripts[1], /^add element inet egressd allow4_mac \{ 02:00:00:00:00:0a \. 198\.18\.1\.20 \. udp \. 123 timeout 100s \}\n/, 'and the reverse')
  t.equal(await metric(registry, 'egressd_firewall_cross_family_total'), 0, 'nothing skipped for its family')
  // The same device over its other family, or a privacy address: the same elements, deduped.
  t.equal(sink.add('ntp.example', NTP, [v6('2001:db8:1::20', 30)], 'fd77::5c1:9a2b:11f0:7e3d'), sink.add('ntp.example', NTP, [], 'fd77::2'), 'fresh elements: the resolved promise, nothing written')
  t.equal(runner.scripts.length, 2)
  t.equal(sink.elementsOf(MAC_A), 2, 'one device, both families')
  await sink.add('ntp.example', NTP, [v4('198.18.1.20', 40)], '192.168.77.3')
  t.match(runner.scripts[2], /02:00:00:00:00:0b \. 198\.18\.1\.20 \. udp \. 123/, 'another MAC: its own element')
})

t.test('a known MAC answers synchronously; a new client waits for one table read', async (t) => {
  const { sink, source } = setup()
  const feed = sink.answerSink()
  t.equal(feed.perClient, true)
  const first = feed({ name: 'ntp.example', rule: NTP, addresses: [v4('198.18.1.20')], client: '192.168.77.2' })
  t.ok(first instanceof Promise, 'the first answer waits: a table read, then the batch')
  await first
  t.equal(source.reads, 1)
  t.equal(feed({ name: 'ntp.example', rule: NTP, addresses: [v4('198.18.1.20')], client: '192.168.77.2' }), undefined, 'a cache hit with fresh elements stays synchronous')
  t.ok(feed({ name: 'ntp.example', rule: NTP, addresses: [v4('198.18.1.20')], client: '192.168.77.3' }) instanceof Promise, 'B is known from the same read, but its element must be written')
  t.equal(source.reads, 1)
})

t.test('no neighbour entry: nothing written, counted, logged at most once a minute, the answer still leaves', async (t) => {
  let now = 1_000_000
  const { runner, sink, registry, lines } = setup({ now: () => now })
  for (let i = 0; i < 3; i++) {
    await t.resolves(sink.add('ntp.example', NTP, [v4('198.18.1.20')], '10.20.30.40'))
    now += 1_500
  }
  t.equal(runner.scripts.length, 0, 'no element for a client behind a router')
  t.equal(await metric(registry, 'egressd_firewall_no_neighbour_total'), 3)
  const logged = () => lines.filter((l) => /no neighbour entry/.test(String(l.msg)))
  t.equal(logged().length, 1, 'one line for three answers')
  now += 60_000
  await sink.add('ntp.example', NTP, [v4('198.18.1.20')], '10.20.30.40')
  t.equal(logged().length, 2, 'the next minute: one more')
  t.match(logged()[1], { client: '10.20.30.40', answers: 3 }, 'counting the answers since the last line')
  await sink.add('x', NTP, [v4('198.18.1.20')], 'not-an-address')
  t.equal(runner.scripts.length, 0)
})

t.test('bounds per MAC count both families', async (t) => {
  const { runner, sink, registry } = setup({ perDevice: 2 })
  await sink.add('a', NTP, [v4('198.18.1.1')], '192.168.77.2')
  await sink.add('b', NTP, [v6('2001:db8::2')], 'fd77::2')
  await sink.add('c', NTP, [v4('198.18.1.3')], '192.168.77.2')
  t.equal(sink.elementsOf(MAC_A), 2)
  t.equal((await registry.getSingleMetric('egressd_firewall_evicted_total')!.get()).values.find((v) => v.labels.bound === 'device')!.value, 1)
  t.match(runner.scripts.at(-1), /delete element inet egressd allow4_mac \{[^}]*02:00:00:00:00:0a \. 198\.18\.1\.1 \. udp \. 123 \}/, 'the oldest, of either family, went')
})

t.test('restart: the MAC sets are read back into the bounds; unreadable MACs are skipped', async (t) => {
  const listing = (elems: Array<[string, string, number]>) =>
    JSON.stringify({ nftables: [{ metainfo: {} }, { set: { name: 's', elem: elems.map(([c, a, expires]) => ({ elem: { val: { concat: [c, a, 'udp', 123] }, timeout: 300, expires } })) } }] })
  const runner = new ListingRunner({
    allow4_mac: listing([['02:00:00:00:00:0A', '198.18.1.1', 50], [MAC_A, '198.18.1.2', 200], ['not a mac', '198.18.1.3', 100]]),
    allow6_mac: listing([[MAC_A, '2001:db8::1', 20], [MAC_B, '2001:db8::1', 250]]),
  })
  const { sink, lines } = setup({ runner, perDevice: 2 })
  await sink.start()
  await tick()
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { reconciled: 4 })
  t.equal(sink.elementsOf(MAC_A), 2, 'A had 3 across both sets; the bound is 2')
  t.equal(sink.elementsOf(MAC_B), 1)
  t.ok(runner.scripts.some((s) => s.includes('delete element inet egressd allow6_mac { 02:00:00:00:00:0a . 2001:db8::1 . udp . 123 }')), 'the soonest to expire went, in its own set')
  const before = runner.scripts.length
  await sink.add('n', NTP, [v4('198.18.1.2', 200)], '192.168.77.2')
  t.equal(runner.scripts.length, before, 'read back in the form the sink writes: deduped')
})
