import t from 'tap'
import { Registry } from 'prom-client'
import { BlockedNames } from '../../src/metrics/blocked-names.js'

async function series(r: Registry): Promise<Map<string, number>> {
  const text = await r.metrics()
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    const m = /^egressd_blocked_total\{protocol="(\w+)",name="([^"]+)"\} (\d+)$/.exec(line)
    if (m) out.set(`${m[1]} ${m[2]}`, Number(m[3]))
  }
  return out
}

t.test('recent names keep their series; names not seen for a generation fold into _other', async (t) => {
  const r = new Registry()
  const b = new BlockedNames(r, 4)
  t.match(await r.metrics(), /# TYPE egressd_blocked_total counter/)
  for (const name of ['a', 'b', 'c', 'a', 'd', 'e']) b.record('dns', name, '10.0.0.1')
  b.record('sni', 'a', '10.0.0.1')
  const s = await series(r)
  // Generations of max/2 = 2 names: {a,b} then {c,a} then {d,e}; b, c and a were folded.
  t.same(Object.fromEntries(s), { 'dns d': 1, 'dns e': 1, 'dns _other': 4, 'sni a': 1, 'sni _other': 0 })
  t.ok(b.size <= 8, 'at most max names per protocol')
})

t.test('a name seen in every generation keeps its series', async (t) => {
  const r = new Registry()
  const b = new BlockedNames(r, 10)
  for (let i = 0; i < 1000; i++) {
    b.record('dns', `noise${i}.example`, '10.0.0.1')
    if (i % 3 === 0) b.record('dns', 'device.example', '10.0.0.1')
  }
  const s = await series(r)
  t.equal(s.get('dns device.example'), 334)
  t.ok(s.size <= 12)
})

t.test('a flood of distinct names keeps the series bounded and the total exact', async (t) => {
  const r = new Registry()
  const b = new BlockedNames(r, 100)
  for (let i = 0; i < 50_000; i++) b.record(i % 3 ? 'dns' : 'sni', `n${i}.flood.example`, '10.0.0.1')
  const s = await series(r)
  t.ok(s.size <= 202, `${s.size} series: at most 100 names per protocol and two _other`)
  t.ok(s.has('dns n49999.flood.example') && s.has('sni n49998.flood.example'), 'the newest names are there')
  t.equal([...s.values()].reduce((x, y) => x + y, 0), 50_000)
})

t.test('resize on reload folds whole generations, keeps the totals; 0 keeps only _other', async (t) => {
  const r = new Registry()
  const b = new BlockedNames(r, 10)
  for (const name of ['a', 'b', 'c', 'd']) b.record('dns', name, '10.0.0.1')
  b.resize(2)
  let s = await series(r)
  t.ok(b.size <= 2, `${b.size} names kept`)
  t.equal([...s.values()].reduce((x, y) => x + y, 0), 4)
  b.resize(0)
  b.record('dns', 'z', '10.0.0.1')
  s = await series(r)
  t.same(Object.fromEntries(s), { 'dns _other': 5, 'sni _other': 0 })
})

async function clientSeries(r: Registry): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const line of (await r.metrics()).split('\n')) {
    const m = /^egressd_client_blocked_total\{protocol="(\w+)",client="([^"]+)"\} (\d+)$/.exec(line)
    if (m) out[`${m[1]} ${m[2]}`] = Number(m[3])
  }
  return out
}

t.test('blocked attempts by client: bounded the same way, the total exact', async (t) => {
  const r = new Registry()
  const b = new BlockedNames(r, 100, 4)
  t.match(await r.metrics(), /# TYPE egressd_client_blocked_total counter/)
  for (const client of ['192.0.2.1', '192.0.2.2', '192.0.2.1', 'fd00::7', '']) b.record('dns', 'x.example', client)
  b.record('sni', 'y.example', '192.0.2.9')
  // Generations of 2: {.1,.2}, then .1 comes back and fd00::7 joins it, folding .2.
  t.same(await clientSeries(r), { 'dns 192.0.2.1': 2, 'dns fd00::7': 1, 'dns _unknown': 1, 'dns _other': 1, 'sni 192.0.2.9': 1, 'sni _other': 0 })
  for (let i = 0; i < 10_000; i++) b.record('dns', 'x.example', `10.0.${i >> 8}.${i & 255}`)
  const s = await clientSeries(r)
  t.ok(Object.keys(s).length <= 4 + 4, 'at most max clients per protocol plus _other')
  t.equal(Object.entries(s).filter(([k]) => k.startsWith('dns ')).reduce((x, [, v]) => x + v, 0), 10_005)
  b.resize(100, 0)
  t.same(Object.entries(await clientSeries(r)).filter(([k]) => k.startsWith('dns ')), [['dns _other', 10_005]], 'blocked_clients_max 0: only _other')
})
