/**
 * The sink against the real kernel, inside a network namespace this test creates (so
 * the machine's own ruleset is never touched). Skipped, with the reason printed, where
 * that is impossible: not root, no `ip` or `nft`, or namespaces refused.
 */
import t from 'tap'
import { Registry } from 'prom-client'
import { NftablesSink, SpawnNftRunner } from '../../src/firewall/nftables-sink.js'
import { KernelNeighbours, NeighbourTable } from '../../src/firewall/neighbours.js'
import { captureLogger, execFileP, listSet, probeNetns, rule } from './helpers.js'

const probe = await probeNetns()
if (!probe.ok) {
  t.comment(`skipping real-nft tests: ${probe.reason}`)
  t.pass(`skipped: ${probe.reason}`, { skip: probe.reason })
} else {
  const ns = `egressd-test-${process.pid}`
  await execFileP('ip', ['netns', 'add', ns])
  t.teardown(() => execFileP('ip', ['netns', 'del', ns]).then(() => undefined, () => undefined))
  const nft = (...args: string[]) => execFileP('ip', ['netns', 'exec', ns, 'nft', ...args])

  function sink(table = 'egressd', grace = 60, scope: 'shared' | 'device' = 'shared', maxElementsPerDevice = 1024, deviceKey: 'address' | 'mac' = 'address', neighbours?: NeighbourTable) {
    const registry = new Registry()
    const { log, lines } = captureLogger()
    const s = new NftablesSink({ enabled: true, table, graceSeconds: grace, scope, deviceKey, maxElementsPerDevice, maxElements: 65_536 }, { log, registry, runner: new SpawnNftRunner({ command: ['ip', 'netns', 'exec', ns, 'nft'] }), neighbours })
    return { s, registry, lines }
  }
  const sets = async (table = 'egressd') => {
    const { stdout } = await nft('-j', 'list', 'sets', 'inet')
    return (JSON.parse(stdout) as { nftables: Array<{ set?: { name: string; table: string } }> }).nftables.flatMap((o) => (o.set?.table === table ? [o.set.name] : [])).sort()
  }

  const NTP = rule([
    { port: 123, proto: 'udp' },
    { port: 443, proto: 'tcp' },
  ], 'time1.google.com')

  t.test('start creates the table and sets; elements land with timeout = TTL + grace', async (t) => {
    const { s } = sink()
    await s.start()
    const { stdout } = await nft('list', 'table', 'inet', 'egressd')
    t.match(stdout, /set allow4 \{\s+type ipv4_addr \. inet_proto \. inet_service\s+flags timeout/)
    t.match(stdout, /set allow6 \{\s+type ipv6_addr \. inet_proto \. inet_service\s+flags timeout/)

    await s.add('time1.google.com', NTP, [
      { address: '192.0.2.10', family: 4, ttl: 240 },
      { address: '2001:db8::10', family: 6, ttl: 20 },
    ])
    // Resolved means applied: listed right away, no polling.
    const v4 = await listSet(ns, 'egressd', 'allow4')
    t.same(v4.map((e) => [e.key, e.timeout]).sort(), [
      ['192.0.2.10 . tcp . 443', 300],
      ['192.0.2.10 . udp . 123', 300],
    ])
    t.ok(v4.every((e) => e.expires > 250 && e.expires <= 300), 'expires counts down from the timeout')
    const v6 = await listSet(ns, 'egressd', 'allow6')
    t.same(v6.map((e) => [e.key, e.timeout]).sort(), [
      ['2001:db8::10 . tcp . 443', 80],
      ['2001:db8::10 . udp . 123', 80],
    ])
    await s.stop()
  })

  t.test('restart: start again keeps elements; a new process refreshes an existing element to its new timeout', async (t) => {
    const { s } = sink()
    await s.start()
    await s.start()
    const before = await listSet(ns, 'egressd', 'allow4')
    t.ok(before.some((e) => e.key === '192.0.2.10 . udp . 123'), 'elements survive start()')
    // This sink has never seen the element: it must still end with the new timeout
    // even where a plain `add element` would leave the old one (kernels < 6.12).
    await s.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 3540 }])
    const after = (await listSet(ns, 'egressd', 'allow4')).find((e) => e.key === '192.0.2.10 . udp . 123')
    t.equal(after?.timeout, 3600, `the new timeout, written with ${s.refreshMode}`)
    t.ok(after!.expires > 3500, `and the new deadline (expires ${after!.expires} s)`)
    // and downwards too: a fresh process writes what the answer says. Never started, it
    // has not probed, so it writes the three-command way: both ways are checked here.
    const { s: s2 } = sink()
    t.equal(s2.refreshMode, 'add-delete-add')
    await s2.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 5 }])
    const down = (await listSet(ns, 'egressd', 'allow4')).find((e) => e.key === '192.0.2.10 . udp . 123')
    t.equal(down?.timeout, 65)
    t.ok(down!.expires <= 65, `expires ${down!.expires} s`)
    await s.stop()
    await s2.stop()
  })

  t.test("the refresh probe tells what this kernel does, and leaves no table behind", async (t) => {
    // The same experiment by hand: 10 s, then 3 600 s on a plain add, in separate runs.
    await execFileP('sh', ['-c', `printf '%s\n' 'add table inet by_hand' 'add set inet by_hand s { type ipv4_addr . inet_proto . inet_service; flags timeout; }' 'add element inet by_hand s { 192.0.2.9 . tcp . 9 timeout 10s }' | ip netns exec ${ns} nft -f -`])
    await nft('add', 'element', 'inet', 'by_hand', 's', '{ 192.0.2.9 . tcp . 9 timeout 3600s }')
    const expires = (await listSet(ns, 'by_hand', 's'))[0]!.expires
    await nft('delete', 'table', 'inet', 'by_hand')
    const kernelRefreshes = expires > 10
    t.comment(`this kernel ${kernelRefreshes ? 'refreshes' : 'does not refresh'} a timeout on a plain add (expires ${expires} s)`)

    const { s, lines } = sink()
    await s.start()
    t.equal(s.refreshMode, kernelRefreshes ? 'add' : 'add-delete-add')
    t.match(lines.find((l) => l.msg === 'nftables sets ready'), { refresh: s.refreshMode })
    const { stdout } = await nft('list', 'tables')
    t.notMatch(stdout, /egressd_probe/, 'the probe table is gone')
    await s.stop()
  })

  t.test('500 concurrent answers: few nft runs, every element present after its promise', async (t) => {
    const { s, registry } = sink()
    await s.start()
    const adds: Promise<void>[] = []
    for (let i = 0; i < 500; i++) {
      adds.push(s.add(`n${i}.example.com`, rule(), [{ address: `198.51.${100 + (i >> 8)}.${i & 255}`, family: 4, ttl: 120 }]))
    }
    await Promise.all(adds)
    const keys = new Set((await listSet(ns, 'egressd', 'allow4')).map((e) => e.key))
    let missing = 0
    for (let i = 0; i < 500; i++) if (!keys.has(`198.51.${100 + (i >> 8)}.${i & 255} . tcp . 443`)) missing++
    t.equal(missing, 0)
    const batches = (await registry.getSingleMetric('egressd_firewall_batches_total')!.get()).values.find((v) => v.labels.result === 'applied')!.value
    t.ok(batches >= 1 && batches <= 3, `batched into ${batches} run(s)`)
    await s.stop()
  })

  t.test('after the table is deleted under it (nft flush ruleset), the next batch recreates it', async (t) => {
    const { s, lines } = sink()
    await s.start()
    await nft('delete', 'table', 'inet', 'egressd')
    await s.add('a.example.com', rule(), [{ address: '203.0.113.77', family: 4, ttl: 30 }])
    t.same((await listSet(ns, 'egressd', 'allow4')).map((e) => e.key), ['203.0.113.77 . tcp . 443'])
    t.ok(lines.some((l) => /declaring the table and sets again/.test(String(l.msg))))
    await s.stop()
  })

  t.test('a set with another definition: start and batches fail, counted and logged, never thrown', async (t) => {
    await nft('add', 'table', 'inet', 'other')
    await nft('add', 'set', 'inet', 'other', 'allow4', '{ type ipv4_addr; }')
    const { s, registry, lines } = sink('other')
    await t.resolves(s.start())
    await t.resolves(s.add('a.example.com', rule(), [{ address: '192.0.2.1', family: 4, ttl: 30 }]))
    const errors = (await registry.getSingleMetric('egressd_firewall_errors_total')!.get()).values
    t.equal(errors.find((v) => v.labels.reason === 'start')!.value, 1)
    t.equal(errors.find((v) => v.labels.reason === 'nft')!.value, 1)
    const line = lines.find((l) => l.level === 50 && /batch failed/.test(String(l.msg)))
    t.match(String((line?.err as { message?: string } | undefined)?.message), /nft exited with 1: .*(File exists|Error)/)
    const { stdout } = await nft('list', 'table', 'inet', 'egressd')
    t.match(stdout, /203\.0\.113\.77/, 'the egressd table was not touched')
    await s.stop()
  })

  t.test('scope device: elements keyed by the client; a switch of scope removes the old sets; a restart reads the sets back and trims them to the bounds', async (t) => {
    await nft('delete', 'table', 'inet', 'egressd')
    const { s: shared } = sink()
    await shared.start()
    await shared.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 240 }])
    await shared.stop()
    t.same(await sets(), ['allow4', 'allow6'])

    const { s, lines } = sink('egressd', 60, 'device', 3)
    await s.start()
    t.same(await sets(), ['allow4_dev', 'allow6_dev'], 'the shared sets are gone: no rule named them')
    t.match(lines.find((l) => l.msg === 'nftables sets ready'), { scope: 'device', otherScope: 'removed' })
    const { stdout } = await nft('list', 'table', 'inet', 'egressd')
    t.match(stdout, /set allow4_dev \{\s+type ipv4_addr \. ipv4_addr \. inet_proto \. inet_service\s+flags timeout/)
    t.match(stdout, /set allow6_dev \{\s+type ipv6_addr \. ipv6_addr \. inet_proto \. inet_service\s+flags timeout/)
    await s.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 240 }], '10.0.0.2')
    await s.add('time1.google.com', NTP, [{ address: '2001:db8::10', family: 6, ttl: 20 }], 'fd00::2')
    for (let i = 1; i <= 3; i++) await s.add('n.example', rule([{ port: 123, proto: 'udp' }]), [{ address: `198.51.100.${i}`, family: 4, ttl: 100 * i }], '10.0.0.3')
    t.same((await listSet(ns, 'egressd', 'allow4_dev')).map((e) => [e.key, e.timeout]).sort(), [
      ['10.0.0.2 . 192.0.2.10 . tcp . 443', 300],
      ['10.0.0.2 . 192.0.2.10 . udp . 123', 300],
      ['10.0.0.3 . 198.51.100.1 . udp . 123', 160],
      ['10.0.0.3 . 198.51.100.2 . udp . 123', 260],
      ['10.0.0.3 . 198.51.100.3 . udp . 123', 360],
    ])
    t.same((await listSet(ns, 'egressd', 'allow6_dev')).map((e) => e.key).sort(), ['fd00::2 . 2001:db8::10 . tcp . 443', 'fd00::2 . 2001:db8::10 . udp . 123'])
    // Past the per-device bound (3) the device's oldest goes, from the kernel too.
    await s.add('n.example', rule([{ port: 123, proto: 'udp' }]), [{ address: '198.51.100.4', family: 4, ttl: 100 }], '10.0.0.3')
    const keys3 = (await listSet(ns, 'egressd', 'allow4_dev')).map((e) => e.key).filter((k) => k.startsWith('10.0.0.3 ')).sort()
    t.same(keys3, ['10.0.0.3 . 198.51.100.2 . udp . 123', '10.0.0.3 . 198.51.100.3 . udp . 123', '10.0.0.3 . 198.51.100.4 . udp . 123'])
    // An evicted element that expired in the kernel already: the delete must not fail the batch.
    await nft('delete', 'element', 'inet', 'egressd', 'allow4_dev', '{ 10.0.0.3 . 198.51.100.2 . udp . 123 }')
    await s.add('n.example', rule([{ port: 123, proto: 'udp' }]), [{ address: '198.51.100.5', family: 4, ttl: 100 }], '10.0.0.3')
    t.notOk((await listSet(ns, 'egressd', 'allow4_dev')).some((e) => e.key.includes('198.51.100.2 ')), 'gone')
    t.ok((await listSet(ns, 'egressd', 'allow4_dev')).some((e) => e.key.includes('198.51.100.5 ')), 'and the new one written in the same batch')
    await s.stop()

    // A restart with a lower bound: read back (7 elements), trimmed to 2 per device.
    const { s: again, lines: l2, registry } = sink('egressd', 60, 'device', 2)
    await again.start()
    await again.stop()
    t.match(l2.find((l) => l.msg === 'nftables sets ready'), { reconciled: 7 })
    const after = (await listSet(ns, 'egressd', 'allow4_dev')).map((e) => e.key).sort()
    t.same(after.filter((k) => k.startsWith('10.0.0.3 ')), ['10.0.0.3 . 198.51.100.3 . udp . 123', '10.0.0.3 . 198.51.100.5 . udp . 123'], 'the soonest to expire went')
    t.equal(after.filter((k) => k.startsWith('10.0.0.2 ')).length, 2, 'the other device kept both')
    t.equal((await registry.getSingleMetric('egressd_firewall_evicted_total')!.get()).values.find((v) => v.labels.bound === 'device')!.value, 1)

    // Back to shared: the device sets go.
    const { s: back } = sink()
    await back.start()
    t.same(await sets(), ['allow4', 'allow6'])
    await back.stop()
  })

  t.test('device_key mac: MACs from the namespace\'s real neighbour tables; an IPv4 client\'s AAAA answer and an IPv6 client\'s A answer land in the MAC sets; switching key retires the address sets', async (t) => {
    // A veth pair inside the namespace: n0 is the gateway's side, its peer holds the
    // "device" addresses; the neighbour entries are the kernel's own, made with ip neigh.
    const ip = (...args: string[]) => execFileP('ip', ['-n', ns, ...args])
    await ip('link', 'add', 'n0', 'type', 'veth', 'peer', 'name', 'n1')
    await ip('addr', 'add', '10.99.0.1/24', 'dev', 'n0')
    await ip('-6', 'addr', 'add', 'fd99::1/64', 'dev', 'n0', 'nodad')
    await ip('link', 'set', 'n0', 'up')
    await ip('link', 'set', 'n1', 'up')
    await ip('neigh', 'replace', '10.99.0.2', 'lladdr', '02:00:00:99:00:02', 'dev', 'n0', 'nud', 'stale')
    await ip('-6', 'neigh', 'replace', 'fd99::2', 'lladdr', '02:00:00:99:00:02', 'dev', 'n0', 'nud', 'stale')
    await ip('neigh', 'replace', '10.99.0.3', 'lladdr', '02:00:00:99:00:03', 'dev', 'n0', 'nud', 'reachable')
    // /proc/net/arp is per namespace: read it through a process living in the namespace.
    const { spawn } = await import('node:child_process')
    const holder = spawn('ip', ['netns', 'exec', ns, 'sleep', '120'], { stdio: 'ignore' })
    t.teardown(() => {
      holder.kill()
    })
    await new Promise((r) => setTimeout(r, 200))
    const { stdout: pids } = await execFileP('ip', ['netns', 'pids', ns])
    const pid = pids.split('\n').find((p) => p.trim() !== '')!.trim()
    const neighbours = new NeighbourTable(new KernelNeighbours({ arpPath: `/proc/${pid}/net/arp`, ip: ['ip', '-n', ns] }))
    t.equal(await neighbours.lookup('10.99.0.2'), '02:00:00:99:00:02', 'IPv4 from /proc/PID/net/arp')
    t.equal(await neighbours.lookup('fd99::2'), '02:00:00:99:00:02', 'IPv6 from ip -j -6 neigh show')
    t.equal(await neighbours.lookup('10.99.0.77'), null, 'no entry: null')

    const { s: addr } = sink('egressd', 60, 'device')
    await addr.start()
    await addr.stop()
    const { s, lines, registry } = sink('egressd', 60, 'device', 1024, 'mac', neighbours)
    await s.start()
    t.match(lines.find((l) => l.msg === 'nftables sets ready'), { deviceKey: 'mac', otherScope: 'removed' })
    t.same(await sets(), ['allow4_mac', 'allow6_mac'], 'the address-keyed and shared sets are gone')
    await s.add('time1.google.com', NTP, [{ address: '2001:db8::10', family: 6, ttl: 240 }], '10.99.0.2')
    await s.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 240 }], 'fd99::2')
    await s.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 240 }], '10.99.0.3')
    await s.add('time1.google.com', NTP, [{ address: '192.0.2.10', family: 4, ttl: 240 }], '10.99.0.77')
    t.same((await listSet(ns, 'egressd', 'allow6_mac')).map((e) => e.key).sort(), ['02:00:00:99:00:02 . 2001:db8::10 . tcp . 443', '02:00:00:99:00:02 . 2001:db8::10 . udp . 123'], 'the AAAA answer to an IPv4 client')
    t.same((await listSet(ns, 'egressd', 'allow4_mac')).map((e) => e.key).sort(), [
      '02:00:00:99:00:02 . 192.0.2.10 . tcp . 443',
      '02:00:00:99:00:02 . 192.0.2.10 . udp . 123',
      '02:00:00:99:00:03 . 192.0.2.10 . tcp . 443',
      '02:00:00:99:00:03 . 192.0.2.10 . udp . 123',
    ], 'the A answer to an IPv6 client, and another device; nothing for the client without an entry')
    t.equal((await registry.getSingleMetric('egressd_firewall_no_neighbour_total')!.get()).values[0]!.value, 1)
    await s.stop()
    // A restart reads the MAC sets back, in the form it writes them: nothing rewritten.
    const { s: again, lines: l2 } = sink('egressd', 60, 'device', 1024, 'mac', neighbours)
    await again.start()
    t.match(l2.find((l) => l.msg === 'nftables sets ready'), { reconciled: 6 })
    t.equal(again.elementsOf('02:00:00:99:00:02'), 4, 'one device, both families, one bound')
    await again.stop()
    const { s: back } = sink()
    await back.start()
    t.same(await sets(), ['allow4', 'allow6'], 'back to shared: the MAC sets go')
    await back.stop()
  })

  t.test('stop leaves the table and its elements to expire', async (t) => {
    const { s } = sink()
    await s.start()
    await s.add('a.example.com', rule(), [{ address: '192.0.2.99', family: 4, ttl: 30 }])
    await s.stop()
    t.ok((await listSet(ns, 'egressd', 'allow4')).some((e) => e.key === '192.0.2.99 . tcp . 443'))
  })
}
