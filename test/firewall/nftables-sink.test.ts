import t from 'tap'
import { Registry } from 'prom-client'
import { NftablesSink } from '../../src/firewall/nftables-sink.js'
import { batchScript, clampTimeout, declareScript, MAX_TIMEOUT_SECONDS, refreshProbeResult } from '../../src/firewall/nft-script.js'
import { SpawnNftRunner } from '../../src/firewall/nft-runner.js'
import { captureLogger, FakeRunner, rule, tick } from './helpers.js'

const CFG = { enabled: true, table: 'egressd', graceSeconds: 60, scope: 'shared' as const, deviceKey: 'address' as const, maxElementsPerDevice: 1024, maxElements: 65_536 }

function setup(opts: { now?: () => number; maxKnown?: number; maxPending?: number; grace?: number } = {}) {
  const runner = new FakeRunner()
  const registry = new Registry()
  const { log, lines } = captureLogger()
  const sink = new NftablesSink({ ...CFG, graceSeconds: opts.grace ?? 60 }, { log, registry, runner, now: opts.now, maxKnown: opts.maxKnown, maxPending: opts.maxPending })
  return { runner, registry, sink, lines }
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  const v = m.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val))
  return v?.value ?? NaN
}

t.test('start declares the table and both sets with add (idempotent); it empties and removes only the other scope\'s sets', async (t) => {
  const { runner, sink, lines } = setup()
  await sink.start()
  t.equal(runner.scripts.length, 4)
  t.equal(
    runner.scripts[0],
    'add table inet egressd\n' +
      'add set inet egressd allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }\n' +
      'add set inet egressd allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }\n',
  )
  t.notMatch(runner.scripts[0]!, /flush|delete|create|chain/, 'never flushes, deletes or touches chains')
  t.equal(
    runner.scripts[1],
    'add table inet egressd\n' +
      'add set inet egressd allow4_dev { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags timeout; }\n' +
      'flush set inet egressd allow4_dev\n' +
      'add set inet egressd allow6_dev { type ipv6_addr . ipv6_addr . inet_proto . inet_service; flags timeout; }\n' +
      'flush set inet egressd allow6_dev\n' +
      'add set inet egressd allow4_mac { type ether_addr . ipv4_addr . inet_proto . inet_service; flags timeout; }\n' +
      'flush set inet egressd allow4_mac\n' +
      'add set inet egressd allow6_mac { type ether_addr . ipv6_addr . inet_proto . inet_service; flags timeout; }\n' +
      'flush set inet egressd allow6_mac\n',
    'the device scope\'s sets, by address and by MAC, are emptied (made first, so the flush cannot fail on a missing set)',
  )
  t.equal(runner.scripts[2], 'delete set inet egressd allow4_dev\ndelete set inet egressd allow6_dev\n', 'then deleted')
  t.equal(runner.scripts[3], 'delete set inet egressd allow4_mac\ndelete set inet egressd allow6_mac\n', 'one pair per run')
  t.notMatch(runner.scripts.join(''), /(flush|delete) set inet egressd allow[46]\b/, 'the shared sets are never flushed or deleted')
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { scope: 'shared', otherScope: 'removed' })
})

t.test('a batch is one element per address x port, add/delete/add, exact text', async (t) => {
  const { runner, sink, registry } = setup()
  const r = rule([
    { port: 443, proto: 'tcp' },
    { port: 123, proto: 'udp' },
  ])
  await sink.add('api.example.com', r, [
    { address: '192.0.2.1', family: 4, ttl: 300 },
    { address: '2001:db8::1', family: 6, ttl: 30 },
    { address: '192.0.2.2', family: 4, ttl: 0 },
  ])
  t.equal(runner.scripts.length, 1)
  const v4 = '192.0.2.1 . tcp . 443 timeout 360s, 192.0.2.1 . udp . 123 timeout 360s, 192.0.2.2 . tcp . 443 timeout 60s, 192.0.2.2 . udp . 123 timeout 60s'
  const v4keys = '192.0.2.1 . tcp . 443, 192.0.2.1 . udp . 123, 192.0.2.2 . tcp . 443, 192.0.2.2 . udp . 123'
  const v6 = '2001:db8::1 . tcp . 443 timeout 90s, 2001:db8::1 . udp . 123 timeout 90s'
  const v6keys = '2001:db8::1 . tcp . 443, 2001:db8::1 . udp . 123'
  t.equal(
    runner.scripts[0],
    `add element inet egressd allow4 { ${v4} }\n` +
      `delete element inet egressd allow4 { ${v4keys} }\n` +
      `add element inet egressd allow4 { ${v4} }\n` +
      `add element inet egressd allow6 { ${v6} }\n` +
      `delete element inet egressd allow6 { ${v6keys} }\n` +
      `add element inet egressd allow6 { ${v6} }\n`,
  )
  t.equal(await metric(registry, 'egressd_firewall_elements_added_total', { family: 'ipv4' }), 4)
  t.equal(await metric(registry, 'egressd_firewall_elements_added_total', { family: 'ipv6' }), 2)
  t.equal(await metric(registry, 'egressd_firewall_batches_total', { result: 'applied' }), 1)
})

t.test('script builder: declarations first when asked, empty sets leave no command', async (t) => {
  const none = { keys: [], timeouts: [] }
  t.equal(batchScript('egressd', none, none, false), '')
  const s = batchScript('fw', { keys: ['198.51.100.7 . udp . 123'], timeouts: [61] }, none, true)
  t.equal(
    s,
    declareScript('fw') +
      'add element inet fw allow4 { 198.51.100.7 . udp . 123 timeout 61s }\n' +
      'delete element inet fw allow4 { 198.51.100.7 . udp . 123 }\n' +
      'add element inet fw allow4 { 198.51.100.7 . udp . 123 timeout 61s }\n',
  )
  t.equal(clampTimeout(0), 1, 'timeout 0s would mean "never expires"')
  t.equal(clampTimeout(NaN), 1)
  t.equal(clampTimeout(2 ** 31 + 60), MAX_TIMEOUT_SECONDS)
  t.equal(clampTimeout(90.7), 90)
})

t.test('concurrent adds while nft runs coalesce into one next run; each resolves after its own batch', async (t) => {
  const { runner, sink, registry } = setup()
  runner.auto = false
  const settled: number[] = []
  const first = sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 100 }]).then(() => settled.push(0))
  await tick()
  t.equal(runner.open, 1, 'first add flushed at once when idle')
  const later: Promise<number>[] = []
  for (let i = 0; i < 200; i++) {
    later.push(sink.add(`n${i}.example.com`, rule(), [{ address: `198.51.100.${i % 250}`, family: 4, ttl: 100 }]).then(() => settled.push(1)))
  }
  await tick()
  t.equal(runner.open, 1, 'no second nft while one runs')
  t.same(settled, [], 'nothing resolved before its batch is applied')
  runner.release()
  await first
  t.same(settled, [0], 'the first add resolves with the first batch only')
  await tick()
  t.equal(runner.scripts.length, 2, 'all 200 later adds went into one run')
  t.equal(runner.scripts[1]!.match(/198\.51\.100\.\d+ \. tcp \. 443 timeout/g)!.length, 400, '200 elements, twice (add, add)')
  t.equal(settled.length, 1, 'later adds still wait for their batch')
  runner.release()
  await Promise.all(later)
  t.equal(settled.length, 201)
  t.equal(await metric(registry, 'egressd_firewall_batches_total', { result: 'applied' }), 2)
})

t.test('adds in one event-loop turn share a batch even when idle', async (t) => {
  const { runner, sink } = setup()
  await Promise.all([
    sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 10 }]),
    sink.add('b.example.com', rule(), [{ address: '192.0.2.2', family: 4, ttl: 10 }]),
    sink.add('c.example.com', rule(), [{ address: '2001:db8::2', family: 6, ttl: 10 }]),
  ])
  t.equal(runner.scripts.length, 1)
})

t.test('dedupe and refresh follow the clock: skip while more than half remains', async (t) => {
  let now = 1_000_000
  const { runner, sink, registry } = setup({ now: () => now })
  const addr = [{ address: '192.0.2.9', family: 4 as const, ttl: 40 }] // timeout 100 s
  await sink.add('a.example.com', rule(), addr)
  t.equal(runner.scripts.length, 1)

  now += 49_000 // 51 s left of 100: more than half
  await sink.add('a.example.com', rule(), addr)
  t.equal(runner.scripts.length, 1, 'cache-hit refresh skipped')
  t.equal(await metric(registry, 'egressd_firewall_elements_skipped_total'), 1)

  now += 2_000 // 49 s left: refresh
  await sink.add('a.example.com', rule(), addr)
  t.equal(runner.scripts.length, 2, 'near expiry: written again')
  t.match(runner.scripts[1]!, /delete element inet egressd allow4 \{ 192\.0\.2\.9 \. tcp \. 443 \}/, 'refresh deletes then adds so older kernels take the new timeout')
  t.match(runner.scripts[1]!, /192\.0\.2\.9 \. tcp \. 443 timeout 100s/)

  now += 10_000 // 90 s left of the refreshed 100 s
  await sink.add('a.example.com', rule(), addr)
  t.equal(runner.scripts.length, 2, 'the refresh reset the clock')

  // A longer TTL for the same element (another name, same address) is written at once:
  // 90 s left is less than half of 3660 s.
  await sink.add('b.example.com', rule(), [{ address: '192.0.2.9', family: 4, ttl: 3600 }])
  t.equal(runner.scripts.length, 3)
  t.match(runner.scripts[2]!, /timeout 3660s/)
  // …and a shorter one afterwards never shrinks it.
  await sink.add('a.example.com', rule(), addr)
  t.equal(runner.scripts.length, 3, 'a short TTL does not shorten a long element')
})

t.test('a skipped element whose batch is still running makes the answer wait for that batch', async (t) => {
  const { runner, sink } = setup()
  runner.auto = false
  let firstDone = false
  let secondDone = false
  void sink.add('a.example.com', rule(), [{ address: '192.0.2.5', family: 4, ttl: 300 }]).then(() => (firstDone = true))
  await tick()
  void sink.add('a.example.com', rule(), [{ address: '192.0.2.5', family: 4, ttl: 300 }]).then(() => (secondDone = true))
  await tick()
  t.equal(runner.scripts.length, 1, 'deduped: no second write')
  t.equal(secondDone, false, 'but the second answer waits: the element is not in the set yet')
  runner.release()
  await tick()
  await tick()
  t.ok(firstDone && secondDone)
})

t.test('the same element twice in one pending batch is written once with the larger timeout', async (t) => {
  const { runner, sink } = setup()
  runner.auto = false
  void sink.add('x.example.com', rule(), [{ address: '203.0.113.1', family: 4, ttl: 1 }])
  await tick() // batch 1 running
  const p1 = sink.add('a.example.com', rule(), [{ address: '203.0.113.2', family: 4, ttl: 10 }])
  const p2 = sink.add('b.example.com', rule(), [{ address: '203.0.113.2', family: 4, ttl: 10 }])
  // Not skipped only if the first entry had < half left; force it with a far longer TTL.
  const p3 = sink.add('c.example.com', rule(), [{ address: '203.0.113.2', family: 4, ttl: 5000 }])
  runner.release()
  await tick()
  runner.release()
  await Promise.all([p1, p2, p3])
  const s = runner.scripts[1]!
  t.equal(s.match(/203\.0\.113\.2 \. tcp \. 443 timeout/g)!.length, 2, 'once in each add command')
  t.match(s, /203\.0\.113\.2 \. tcp \. 443 timeout 5060s/)
  t.equal(s.match(/delete element[^\n]*203\.0\.113\.2/g)!.length, 1)
})

t.test('a failed batch is retried once with the table declared; a second failure is counted, logged, and resolves', async (t) => {
  const { runner, sink, registry, lines } = setup()
  runner.failures = 1
  await sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 10 }])
  t.equal(runner.scripts.length, 2)
  t.ok(runner.scripts[1]!.startsWith('add table inet egressd\n'), 'the retry recreates the table and sets first')
  t.equal(await metric(registry, 'egressd_firewall_batches_total', { result: 'applied' }), 1)
  t.ok(lines.some((l) => l.level === 40 && /flushed/.test(String(l.msg))), 'the recovery is logged')

  runner.failures = 2
  const r = await sink.add('b.example.com', rule(), [{ address: '192.0.2.2', family: 4, ttl: 10 }])
  t.equal(r, undefined, 'the promise resolves, it does not reject')
  t.equal(await metric(registry, 'egressd_firewall_batches_total', { result: 'failed' }), 1)
  t.equal(await metric(registry, 'egressd_firewall_errors_total', { reason: 'nft' }), 1)
  const err = lines.find((l) => l.level === 50)
  t.ok(err, 'an error line')
  t.match(String((err!.err as { message: string }).message), /No such file/)

  // The failed element was forgotten: the next answer writes it again.
  await sink.add('b.example.com', rule(), [{ address: '192.0.2.2', family: 4, ttl: 10 }])
  t.equal(runner.scripts.length, 5)
  t.match(runner.scripts[4]!, /192\.0\.2\.2/)
})

t.test('start failure is counted and logged, never thrown', async (t) => {
  const { runner, sink, registry, lines } = setup()
  runner.failures = 1
  await t.resolves(sink.start())
  t.equal(await metric(registry, 'egressd_firewall_errors_total', { reason: 'start' }), 1)
  t.ok(lines.some((l) => l.level === 50))
})

t.test('addresses that are not IP literals never reach the script', async (t) => {
  const { runner, sink, registry } = setup()
  await sink.add('evil.example.com', rule(), [
    { address: '1.2.3.4 . tcp . 22 timeout 1d }; flush ruleset; add element inet egressd allow4 {', family: 4, ttl: 10 },
    { address: 'fe80::1%eth0', family: 6, ttl: 10 },
    { address: 'example.com', family: 4, ttl: 10 },
    { address: '', family: 4, ttl: 10 },
    { address: '::ffff:192.0.2.1', family: 6, ttl: 10 },
    { address: '192.0.2.3', family: 6, ttl: 10 }, // wrong family tag: the address decides
  ])
  t.equal(runner.scripts.length, 1)
  t.notMatch(runner.scripts[0]!, /flush|eth0|example/)
  t.match(runner.scripts[0]!, /allow6 \{ ::ffff:192\.0\.2\.1 \. tcp \. 443 timeout 70s \}/)
  t.match(runner.scripts[0]!, /allow4 \{ 192\.0\.2\.3 \. tcp \. 443 timeout 70s \}/)
  t.equal(await metric(registry, 'egressd_firewall_errors_total', { reason: 'invalid_address' }), 4)
})

t.test('the pending queue is bounded; overflow is counted and the answer is not held', async (t) => {
  const { runner, sink, registry } = setup({ maxPending: 10 })
  runner.auto = false
  void sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 10 }])
  await tick()
  const addrs = Array.from({ length: 15 }, (_, i) => ({ address: `198.51.100.${i}`, family: 4 as const, ttl: 10 }))
  const p = sink.add('b.example.com', rule(), addrs)
  t.equal(await metric(registry, 'egressd_firewall_errors_total', { reason: 'queue_full' }), 5)
  t.equal(await metric(registry, 'egressd_firewall_pending_elements'), 11)
  runner.release()
  await tick()
  runner.release()
  await p
  t.equal(runner.scripts[1]!.match(/timeout/g)!.length, 20, '10 elements, add twice')
})

t.test('the dedupe map is bounded: the element written longest ago is forgotten', async (t) => {
  const { runner, sink } = setup({ maxKnown: 3 })
  for (let i = 1; i <= 4; i++) await sink.add('a.example.com', rule(), [{ address: `192.0.2.${i}`, family: 4, ttl: 100 }])
  t.equal(sink.knownSize, 3)
  t.equal(runner.scripts.length, 4)
  await sink.add('a.example.com', rule(), [{ address: '192.0.2.4', family: 4, ttl: 100 }])
  t.equal(runner.scripts.length, 4, 'recent one still deduped')
  await sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 100 }])
  t.equal(runner.scripts.length, 5, 'evicted one written again (harmless: same timeout)')
})

t.test('update changes the grace; a table change is refused with a log line', async (t) => {
  const { runner, sink, lines } = setup()
  sink.update({ ...CFG, table: 'other', graceSeconds: 5 })
  t.ok(lines.some((l) => /restart/.test(String(l.msg))))
  await sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 10 }])
  t.match(runner.scripts[0]!, /^add element inet egressd allow4 \{ 192\.0\.2\.1 \. tcp \. 443 timeout 15s \}/)
})

t.test('stop writes what is queued, then ignores adds', async (t) => {
  const { runner, sink } = setup()
  runner.auto = false
  let done = false
  void sink.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 10 }])
  await tick()
  void sink.add('b.example.com', rule(), [{ address: '192.0.2.2', family: 4, ttl: 10 }]).then(() => (done = true))
  const stopped = sink.stop()
  runner.release()
  await tick()
  await tick()
  t.equal(runner.open, 1, 'the queued batch is written on stop')
  runner.release()
  await stopped
  t.ok(done)
  t.equal(runner.scripts.length, 2)
  await sink.add('c.example.com', rule(), [{ address: '192.0.2.3', family: 4, ttl: 10 }])
  t.equal(runner.scripts.length, 2)
  t.notMatch(runner.scripts.join(''), /delete table|flush/, 'the table is left for its elements to expire')
})

t.test('an invalid table name is refused before any script is built', async (t) => {
  t.throws(() => new NftablesSink({ ...CFG, table: 'x; flush ruleset' }, { log: captureLogger().log, registry: new Registry(), runner: new FakeRunner() }), { name: 'InvalidArgumentError', code: 'EINVALIDARG' })
})

t.test('SpawnNftRunner: the script reaches stdin; failure rejects with stderr; a missing binary rejects', async (t) => {
  // `sh -c` stands in for nft: it receives `-f -` as $0 $1 and reads the script from stdin.
  const ok = new SpawnNftRunner({ command: ['sh', '-c', 'read line; [ "$line" = "add table inet egressd" ] || exit 3'] })
  await t.resolves(ok.run('add table inet egressd\n'))
  await t.rejects(ok.run('flush ruleset\n'), { code: 'ENFT', message: /exited with 3/ })
  const bad = new SpawnNftRunner({ command: ['sh', '-c', 'cat >/dev/null; echo "Error: Could not process rule: Operation not permitted" >&2; echo "add table inet x" >&2; echo "^^^^" >&2; exit 1'] })
  await t.rejects(bad.run('x'), { code: 'ENFT', message: /Operation not permitted \| add table inet x$/ })
  await t.rejects(new SpawnNftRunner({ command: ['/nonexistent/nft'] }).run('x'), { code: 'ENFT', message: /cannot run/ })
  await t.rejects(new SpawnNftRunner({ command: ['sh', '-c', 'sleep 5'], timeoutMs: 50 }).run(''), { code: 'ENFT', message: /did not finish/ })
})

/** A runner that also answers `query` (the refresh probe's listing). */
class ProbingRunner extends FakeRunner {
  readonly queries: string[][] = []
  constructor(private readonly listing: () => Promise<string>) {
    super()
  }
  query(args: readonly string[]): Promise<string> {
    this.queries.push([...args])
    return this.listing()
  }
}

const listing = (expires: number) =>
  JSON.stringify({ nftables: [{ metainfo: {} }, { set: { name: 's', elem: [{ elem: { val: { concat: ['192.0.2.1', 'tcp', 9] }, timeout: 3600, expires } }] } }] })

function probingSetup(list: () => Promise<string>) {
  const runner = new ProbingRunner(list)
  const { log, lines } = captureLogger()
  const sink = new NftablesSink(CFG, { log, registry: new Registry(), runner })
  return { runner, sink, lines }
}

t.test('refresh probe: a kernel that refreshes on add gets one add per set', async (t) => {
  const { runner, sink, lines } = probingSetup(async () => listing(3599))
  await sink.start()
  t.equal(sink.refreshMode, 'add')
  const probeTable = `egressd_probe_${process.pid}`
  t.equal(runner.scripts.length, 7, 'declare, empty and remove the other groups (two runs), create, re-add, remove')
  runner.scripts.splice(1, 3)
  t.match(runner.scripts[1], new RegExp(`^add table inet ${probeTable}\ndelete table inet ${probeTable}\nadd table inet ${probeTable}\n`), 'starts from an empty table')
  t.match(runner.scripts[1], /timeout 10s/)
  t.match(runner.scripts[2], /^add element inet egressd_probe_\d+ s \{ 192\.0\.2\.1 \. tcp \. 9 timeout 3600s \}\n$/)
  t.same(runner.queries, [['-j', 'list', 'set', 'inet', probeTable, 's'], ['-j', 'list', 'chain', 'inet', 'egressd', 'forward']], 'the probe listing, then the ruleset scope check')
  t.equal(runner.scripts[3], `delete table inet ${probeTable}\n`)
  t.notMatch(runner.scripts.slice(1).join(''), /\begressd (allow4|allow6)\b/, 'the probe never touches the real sets')
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { refresh: 'add' })
  await sink.add('a.example', rule([{ port: 443, proto: 'tcp' }]), [{ address: '192.0.2.7', family: 4, ttl: 40 }])
  t.equal(runner.scripts[4], 'add element inet egressd allow4 { 192.0.2.7 . tcp . 443 timeout 100s }\n')
})

t.test('refresh probe: an old kernel, an unreadable listing, or a failing nft keep add/delete/add', async (t) => {
  for (const [what, list] of [
    ['the old timeout kept', async () => listing(9)],
    ['not JSON', async () => 'Error: something'],
    ['query fails', async () => Promise.reject(new Error('nft: Operation not permitted'))],
  ] as const) {
    const { runner, sink, lines } = probingSetup(list)
    await sink.start()
    t.equal(sink.refreshMode, 'add-delete-add', what)
    t.equal(runner.scripts.at(-1), `delete table inet egressd_probe_${process.pid}\n`, `${what}: the probe table is removed`)
    if (what === 'query fails') t.ok(lines.some((l) => l.msg === 'nftables refresh probe failed; writing elements as add, delete, add'))
    await sink.add('a.example', rule([{ port: 443, proto: 'tcp' }]), [{ address: '192.0.2.7', family: 4, ttl: 40 }])
    t.match(runner.scripts.at(-1), /^add element .*\ndelete element .*\nadd element .*\n$/, `${what}: three commands`)
  }
  t.equal(refreshProbeResult('{"nftables": [{"set": {"elem": [{"elem": {"expires": "3599"}}]}}]}'), 'add-delete-add', 'a non-number is no')
})

t.test('batchScript in add mode: one add per set, exact text', async (t) => {
  const none = { keys: [], timeouts: [] }
  t.equal(
    batchScript('fw', { keys: ['198.51.100.7 . udp . 123'], timeouts: [61] }, { keys: ['2001:db8::7 . tcp . 443'], timeouts: [70] }, false, 'add'),
    'add element inet fw allow4 { 198.51.100.7 . udp . 123 timeout 61s }\n' + 'add element inet fw allow6 { 2001:db8::7 . tcp . 443 timeout 70s }\n',
  )
  t.equal(batchScript('fw', none, none, false, 'add'), '')
})
