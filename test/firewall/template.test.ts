/**
 * config/nftables/egressd.nft: its sets match the sink's, it loads before or after the
 * sink and twice without losing elements or duplicating rules, and on a real
 * three-namespace gateway (device ─ lan0 [gateway] wan0 ─ world) it forwards exactly
 * what the sink put into the sets.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Registry } from 'prom-client'
import { NftablesSink, SpawnNftRunner } from '../../src/firewall/nftables-sink.js'
import { SET_TYPES } from '../../src/firewall/nft-script.js'
import { captureLogger, execFileP, listSet, probeNetns, rule } from './helpers.js'

const TEMPLATE = fileURLToPath(new URL('../../config/nftables/egressd.nft', import.meta.url))
const text = readFileSync(TEMPLATE, 'utf8')
/** The template without its comments: what nft reads. */
const code = text.split('\n').map((l) => l.replace(/#.*$/, '')).join('\n')

t.test('the template declares the same sets as the sink, both scopes, and nothing that empties them', async (t) => {
  t.same(Object.keys(SET_TYPES).sort(), ['allow4', 'allow4_dev', 'allow4_mac', 'allow6', 'allow6_dev', 'allow6_mac'], 'the sets of every scope and device key are compared')
  for (const [set, type] of Object.entries(SET_TYPES)) {
    const m = new RegExp(`set ${set} \\{([^}]*)\\}`).exec(code)
    t.ok(m, `declares ${set}`)
    const body = m![1]!.split('\n').map((l) => l.trim()).filter(Boolean)
    t.same(body, [`type ${type}`, 'flags timeout'], `${set}: exactly the sink's definition (a difference makes nft refuse it)`)
  }
  t.notMatch(code, /flush\s+ruleset/, 'no flush ruleset')
  t.notMatch(code, /flush\s+(set|table)|delete\s+(table|set|element)|destroy/, 'no flush or delete of the table or sets')
  t.match(code, /table inet egressd \{/)
  for (const d of ['DEVICE_IF', 'WAN_IF', 'EGRESSD_SNI_PORT', 'EGRESSD_DNS_PORT']) t.match(code, new RegExp(`^define ${d} = `, 'm'), `operators edit ${d} at the top`)
  t.match(code, /chain shared_scope \{\s+ip daddr \. meta l4proto \. th dport @allow4 accept\s+ip6 daddr \. meta l4proto \. th dport @allow6 accept\s+\}/)
  t.match(code, /chain device_scope \{\s+ip saddr \. ip daddr \. meta l4proto \. th dport @allow4_dev accept\s+ip6 saddr \. ip6 daddr \. meta l4proto \. th dport @allow6_dev accept\s+\}/)
  t.match(code, /chain device_mac_scope \{\s+ether saddr \. ip daddr \. meta l4proto \. th dport @allow4_mac accept\s+ether saddr \. ip6 daddr \. meta l4proto \. th dport @allow6_mac accept\s+\}/)
  for (const chain of ['shared_scope', 'device_scope', 'device_mac_scope']) t.match(code, new RegExp(`^flush chain inet egressd ${chain}$`, 'm'), `${chain}'s rules are replaced on a reload`)
  t.match(code, /^define EGRESSD_SCOPE = "shared_scope"$/m, 'one define selects the scope; shared by default, as the sink')
  t.equal(code.match(/jump \$EGRESSD_SCOPE/g)?.length, 1, 'the forward chain jumps to the chosen scope once')
  t.ok(code.indexOf('jump $EGRESSD_SCOPE') < code.indexOf('counter name dropped_quic'), 'before the drops')
})

const probe = await probeNetns()
if (!probe.ok) {
  t.comment(`skipping nft -c and namespace tests of the template: ${probe.reason}`)
  t.pass(`skipped: ${probe.reason}`, { skip: probe.reason })
} else {
  const tag = process.pid
  const gw = `egressd-gw-${tag}`
  const dev = `egressd-dev-${tag}`
  const world = `egressd-world-${tag}`
  const made: string[] = []
  t.teardown(async () => {
    for (const ns of made) await execFileP('ip', ['netns', 'del', ns]).catch(() => {})
  })
  for (const ns of [gw, dev, world]) {
    await execFileP('ip', ['netns', 'add', ns])
    made.push(ns)
  }
  const inNs = (ns: string, ...cmd: string[]) => execFileP('ip', ['netns', 'exec', ns, ...cmd])
  const nftGw = (...args: string[]) => inNs(gw, 'nft', ...args)

  function sink() {
    const { log } = captureLogger()
    return new NftablesSink({ enabled: true, table: 'egressd', graceSeconds: 60, scope: 'shared', deviceKey: 'address' as const, maxElementsPerDevice: 1024, maxElements: 65_536 }, { log, registry: new Registry(), runner: new SpawnNftRunner({ command: ['ip', 'netns', 'exec', gw, 'nft'] }) })
  }

  async function ruleCount(): Promise<number> {
    const { stdout } = await nftGw('-j', 'list', 'table', 'inet', 'egressd')
    return (JSON.parse(stdout) as { nftables: Array<Record<string, unknown>> }).nftables.filter((o) => 'rule' in o).length
  }

  t.test('nft -c accepts the template in an empty namespace', async (t) => {
    await t.resolves(nftGw('-c', '-f', TEMPLATE))
    const { stdout } = await nftGw('list', 'ruleset')
    t.equal(stdout.trim(), '', '-c changed nothing')
  })

  t.test('sink first, then the template twice, then the sink again: elements kept, rules not duplicated', async (t) => {
    const s = sink()
    await s.start()
    await s.add('0.resinio.pool.ntp.org', rule([{ port: 123, proto: 'udp' }]), [{ address: '203.0.113.2', family: 4, ttl: 600 }])
    await nftGw('-f', TEMPLATE)
    const rules = await ruleCount()
    t.ok(rules >= 10, `${rules} rules loaded`)
    await nftGw('-f', TEMPLATE)
    t.equal(await ruleCount(), rules, 'loading again replaced the rules instead of appending')
    await nftGw('-c', '-f', TEMPLATE)
    const els = await listSet(gw, 'egressd', 'allow4')
    t.same(els.map((e) => e.key), ['203.0.113.2 . udp . 123'], 'the element survived both loads')
    t.ok(els[0]!.expires > 500, 'with its timeout')
    const s2 = sink()
    await s2.start()
    t.equal(await ruleCount(), rules, 'the sink never touches the chains')
    t.equal((await listSet(gw, 'egressd', 'allow4')).length, 1)
    await s.stop()
    await s2.stop()
  })

  t.test('a real gateway forwards only what the sink allowed, and counts the rest', async (t) => {
    // device 10.77.0.2 ─ lan0 10.77.0.1 [gw] wan0 203.0.113.1 ─ 203.0.113.2 world.
    // All of it inside namespaces this test made; nothing leaves them.
    await inNs(gw, 'ip', 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', dev)
    await inNs(gw, 'ip', 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', world)
    await inNs(gw, 'ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'lan0')
    await inNs(gw, 'ip', 'addr', 'add', '203.0.113.1/24', 'dev', 'wan0')
    await inNs(dev, 'ip', 'addr', 'add', '10.77.0.2/24', 'dev', 'eth0')
    await inNs(world, 'ip', 'addr', 'add', '203.0.113.2/24', 'dev', 'eth0')
    for (const [ns, ifs] of [[gw, ['lo', 'lan0', 'wan0']], [dev, ['lo', 'eth0']], [world, ['lo', 'eth0']]] as const) {
      for (const i of ifs) await inNs(ns, 'ip', 'link', 'set', i, 'up')
    }
    await inNs(dev, 'ip', 'route', 'add', 'default', 'via', '10.77.0.1')
    await inNs(gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=1')
    // The world counts what reaches it, per port.
    await execFileP('sh', ['-c', `ip netns exec ${world} nft -f - <<'EOF'
table inet probe {
  counter p123 {}
  counter p124 {}
  counter p443 {}
  counter p853 {}
  counter p53 {}
  chain input {
    type filter hook input priority filter; policy accept;
    udp dport 123 counter name p123
    udp dport 124 counter name p124
    udp dport 443 counter name p443
    udp dport 853 counter name p853
    udp dport 53 counter name p53
  }
}
EOF`])
    const send = (port: number) => inNs(dev, 'bash', '-c', `echo probe > /dev/udp/203.0.113.2/${port}`).catch(() => {})
    const counter = async (ns: string, table: string, name: string) => {
      const { stdout } = await inNs(ns, 'nft', '-j', 'list', 'counter', 'inet', table, name)
      return (JSON.parse(stdout) as { nftables: Array<{ counter?: { packets: number } }> }).nftables.find((o) => o.counter)!.counter!.packets
    }

    // Start from empty sets: the previous test left an element for this address.
    await nftGw('flush', 'set', 'inet', 'egressd', 'allow4')
    await send(123)
    t.equal(await counter(world, 'probe', 'p123'), 0, 'udp 123 before any DNS answer: dropped')
    t.equal(await counter(gw, 'egressd', 'dropped_forward'), 1, 'and counted in dropped_forward')

    const s = sink()
    await s.add('0.resinio.pool.ntp.org', rule([{ port: 123, proto: 'udp' }]), [{ address: '203.0.113.2', family: 4, ttl: 60 }])
    await send(123)
    t.equal(await counter(world, 'probe', 'p123'), 1, 'after the answer: the first packet passes')
    await send(124)
    t.equal(await counter(world, 'probe', 'p124'), 0, 'another port of the same address: dropped')
    t.equal(await counter(gw, 'egressd', 'dropped_forward'), 2)

    await send(443)
    t.equal(await counter(world, 'probe', 'p443'), 0, 'QUIC dropped')
    t.equal(await counter(gw, 'egressd', 'dropped_quic'), 1)
    await send(853)
    t.equal(await counter(world, 'probe', 'p853'), 0, 'DNS over QUIC dropped')
    t.equal(await counter(gw, 'egressd', 'dropped_dot'), 1)

    await send(53)
    t.equal(await counter(world, 'probe', 'p53'), 0, 'DNS to an outside resolver never leaves: redirected to the gateway')
    t.equal(await counter(gw, 'egressd', 'dropped_dns_bypass'), 0, 'caught by the redirect, not by the last-resort drop')
    t.equal(await counter(gw, 'egressd', 'dropped_input'), 0, 'and accepted on the gateway for egressd')
    await s.stop()
  })
}
