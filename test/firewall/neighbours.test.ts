/**
 * device_key mac: reading the kernel's neighbour tables (/proc/net/arp, `ip -j -6 neigh
 * show`) and the cache in front of them. Real captures of both formats, from a gateway
 * namespace with two devices (one of them a macvlan), are the fixtures.
 */
import t from 'tap'
import {
  MAX_NEGATIVES, NeighbourTable, neighbourKey, normalizeMac, parseIpNeighJson, parseProcNetArp, type NeighbourSource,
} from '../../src/firewall/neighbours.js'

const ARP = `IP address       HW type     Flags       HW address            Mask     Device
10.8.0.2         0x1         0x2         3e:63:3d:37:7e:8d     *        wan0
10.9.0.3         0x1         0x2         9e:d6:29:0f:35:3a     *        lan0
10.9.0.2         0x1         0x2         CE:D7:A5:C7:82:06     *        lan0
10.9.0.9         0x1         0x0         00:00:00:00:00:00     *        lan0
10.9.0.10        0x1         0x6         02:00:00:00:00:0a     *        lan0
`

const NEIGH6 = JSON.stringify([
  { dst: '10.8.0.2', dev: 'wan0', lladdr: '3e:63:3d:37:7e:8d', state: ['REACHABLE'] },
  { dst: 'fd09::2', dev: 'lan0', lladdr: 'ce:d7:a5:c7:82:06', state: ['DELAY'] },
  { dst: 'fe80::9cd6:29ff:fe0f:353a', dev: 'lan0', lladdr: '9e:d6:29:0f:35:3a', state: ['STALE'] },
  { dst: 'fd08::2', dev: 'wan0', state: ['INCOMPLETE'] },
  { dst: 'fd09::7', dev: 'lan0', lladdr: '02:00:00:00:00:07', state: ['FAILED'] },
  { dst: 'FD09::8', dev: 'lan0', lladdr: '02:00:00:00:00:08', state: ['PERMANENT'] },
  { dst: 'fd09::9', dev: 'lan0', lladdr: '33:33:00:00:00:01', state: ['NOARP'] },
])

t.test('normalizeMac: lower case, six octets; zero and group addresses refused; nothing else reaches a script', async (t) => {
  t.equal(normalizeMac('CE:D7:A5:C7:82:06'), 'ce:d7:a5:c7:82:06')
  for (const bad of ['00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '33:33:00:00:00:01', 'ce:d7:a5:c7:82', 'ce-d7-a5-c7-82-06', 'ce:d7:a5:c7:82:06 }', '', 'ce:d7:a5:c7:82:0g']) {
    t.equal(normalizeMac(bad), null, JSON.stringify(bad))
  }
})

t.test('neighbourKey: IPv4-mapped clients are looked up in the ARP table; zone indexes and garbage are not looked up', async (t) => {
  t.same(neighbourKey('192.168.77.2'), { family: 4, key: '192.168.77.2' })
  t.same(neighbourKey('::ffff:192.168.77.2'), { family: 4, key: '192.168.77.2' })
  t.same(neighbourKey('FD77::2'), { family: 6, key: 'fd77::2' })
  t.same(neighbourKey('fd77:0:0:0:0:0:0:2'), { family: 6, key: 'fd77::2' }, 'canonical text, as the table is keyed')
  t.same(neighbourKey('::ffff:c0a8:4d02'), { family: 4, key: '192.168.77.2' })
  t.equal(neighbourKey('fe80::1%lan0'), null)
  t.equal(neighbourKey('lan0'), null)
})

t.test('parseProcNetArp: complete entries only', async (t) => {
  t.same([...parseProcNetArp(ARP)], [
    ['10.8.0.2', '3e:63:3d:37:7e:8d'],
    ['10.9.0.3', '9e:d6:29:0f:35:3a'],
    ['10.9.0.2', 'ce:d7:a5:c7:82:06'],
    ['10.9.0.10', '02:00:00:00:00:0a'],
  ], 'the incomplete entry (flags 0x0, zero MAC) is not a device; a permanent one (0x6) is')
  t.same([...parseProcNetArp('')], [])
  t.same([...parseProcNetArp('header\ngarbage line\n1.2.3.4 0x1 zz 02:00:00:00:00:01 * x\n')], [], 'unreadable lines skipped')
  t.equal(parseProcNetArp(ARP, 2).size, 2, 'bounded')
  const twice = ARP + '10.9.0.3         0x1         0x2         02:00:00:00:00:33     *        lan1\n'
  t.notOk(parseProcNetArp(twice).has('10.9.0.3'), 'one address with two MACs (two links) is no answer: either could be the wrong device')
  t.ok(parseProcNetArp(ARP + '10.9.0.2 0x1 0x2 ce:d7:a5:c7:82:06 * lan1\n').has('10.9.0.2'), 'the same MAC twice is fine')
})

t.test('parseIpNeighJson: IPv6 entries with a link-layer address, not INCOMPLETE or FAILED', async (t) => {
  t.same([...parseIpNeighJson(NEIGH6)], [
    ['fd09::2', 'ce:d7:a5:c7:82:06'],
    ['fe80::9cd6:29ff:fe0f:353a', '9e:d6:29:0f:35:3a'],
    ['fd09::8', '02:00:00:00:00:08'],
  ], 'the IPv4 row, the incomplete, the failed and the multicast one are not devices')
  for (const bad of ['', 'not json', '{}', '[1, null, "x", {"dst": 5}]', '[{"dst": "fd09::2", "lladdr": 7}]']) t.same([...parseIpNeighJson(bad)], [], JSON.stringify(bad))
  t.same([...parseIpNeighJson('[{"dst": "FD09:0:0:0:0:0:0:7", "lladdr": "02:00:00:00:00:07", "state": ["REACHABLE"]}]')], [['fd09::7', '02:00:00:00:00:07']],
    'keyed by canonical text, the form neighbourKey looks up')
  t.equal(parseIpNeighJson(NEIGH6, 1).size, 1, 'bounded')
})

/** A neighbour source whose reads the test counts and can hold open. */
class FakeSource implements NeighbourSource {
  reads: Array<4 | 6> = []
  arp = ARP
  neigh = NEIGH6
  fail = false
  read(family: 4 | 6): Promise<string> {
    this.reads.push(family)
    if (this.fail) return Promise.reject(new Error('ip: not found'))
    return Promise.resolve(family === 4 ? this.arp : this.neigh)
  }
}

t.test('NeighbourTable: one read serves every client; a hit is synchronous; TTL, background refresh, misses and their bounds', async (t) => {
  let now = 1_000_000
  const src = new FakeSource()
  const onRead: Array<[number, boolean]> = []
  const table = new NeighbourTable(src, () => now, { ttlMs: 10_000, minReadIntervalMs: 250, negativeTtlMs: 1_000, onRead: (f, ok) => onRead.push([f, ok]) })
  t.equal(table.cached('10.9.0.2'), undefined, 'nothing read yet: only a read can tell')
  t.equal(await table.lookup('10.9.0.2'), 'ce:d7:a5:c7:82:06')
  t.equal(table.cached('10.9.0.3'), '9e:d6:29:0f:35:3a', 'another device, from the same read, without waiting')
  t.equal(table.cached('::ffff:10.9.0.3'), '9e:d6:29:0f:35:3a', 'IPv4-mapped')
  t.same(src.reads, [4])
  t.equal(await table.lookup('fd09::2'), 'ce:d7:a5:c7:82:06', 'IPv6 from the other table')
  t.same(src.reads, [4, 6])
  t.same(onRead, [[4, true], [6, true]])

  // A miss: the next read no sooner than 250 ms after the last one started.
  const t0 = Date.now()
  now += 100
  const p = table.lookup('10.9.0.77')
  now += 150
  t.equal(await p, null, 'not in the table: not on-link')
  t.ok(Date.now() - t0 >= 100, `the read waited for the interval (${Date.now() - t0} ms)`)
  t.same(src.reads, [4, 6, 4])
  t.equal(table.cached('10.9.0.77'), null, 'a known miss, without a read')
  now += 1_000
  t.equal(table.cached('10.9.0.77'), undefined, 'after negativeTtlMs it is asked again')

  // Concurrent misses share one read.
  now += 1_000
  src.arp += '10.9.0.77 0x1 0x2 02:00:00:00:00:77 * lan0\n'
  const [a, b] = await Promise.all([table.lookup('10.9.0.77'), table.lookup('10.9.0.78')])
  t.same([a, b], ['02:00:00:00:00:77', null])
  t.same(src.reads, [4, 6, 4, 4], 'one read for both')

  // Second half of the TTL: still answered at once, refreshed in the background.
  now += 6_000
  t.equal(table.cached('10.9.0.77'), '02:00:00:00:00:77')
  t.equal(table.cached('10.9.0.2'), 'ce:d7:a5:c7:82:06', 'one background read, however many hits')
  await new Promise((r) => setImmediate(r))
  t.same(src.reads, [4, 6, 4, 4, 4])
  // Past the TTL (no read in between): a lookup again.
  now += 10_001
  t.equal(table.cached('10.9.0.2'), undefined, 'an entry older than the TTL is not trusted')

  // A failing read: counted, no answer, the last snapshot stays for the rest of its life.
  src.fail = true
  t.equal(await table.lookup('10.9.0.2'), null)
  t.same(onRead.at(-1), [4, false])
})

t.test('NeighbourTable: misses are bounded in memory', async (t) => {
  let now = 0
  const src = new FakeSource()
  const table = new NeighbourTable(src, () => now, { minReadIntervalMs: 0 })
  for (let i = 0; i < MAX_NEGATIVES + 10; i++) await table.lookup(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)
  t.equal(table.cached('10.0.0.0'), undefined, 'the oldest miss was forgotten')
  t.equal(table.cached(`10.0.${((MAX_NEGATIVES + 9) >> 8) & 255}.${(MAX_NEGATIVES + 9) & 255}`), null, 'the newest is remembered')
  now += 1
})
