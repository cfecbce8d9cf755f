/**
 * The whole gateway, end to end, across three network namespaces made by this test:
 *
 *   device 192.168.77.2 ─ lan0 [gateway: built egressd + config/nftables/egressd.nft] wan0 ─ world
 *          fd77::2                                                                     2001:db8:…
 *
 * The world (198.18.0.2 and 198.18.1.x, RFC 2544 benchmarking space, and 2001:db8:…,
 * IPv6 documentation space, neither of which egressd treats as private) runs an
 * authoritative DNS server, HTTPS servers with different certificates and bodies on
 * both families, and UDP responders that report every datagram.
 * From the device, real dig, curl and openssl s_client show what a device would see.
 * Nothing leaves the namespaces.
 */
import t, { type Test as Tap } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createTestCa } from '../helpers/certs.js'
import { listSet } from '../firewall/helpers.js'
import { CLI, logMsg, spawnInNs, type JsonLine, type NsProcess } from './netns/process.js'
import { awaitCounter, nftCounter, templateWithDefines } from './netns/ruleset.js'
import {
  GATEWAY_LAN, GATEWAY_LAN6, GATEWAY_WAN, GATEWAY_WAN6, WORLD, WORLD6, Topology, inNs, macOf, missingPrerequisite, runInNs,
} from './netns/topology.js'

const WORLD_SCRIPT = fileURLToPath(new URL('./netns/world.mjs', import.meta.url))
const UDP_PROBE = fileURLToPath(new URL('./netns/udp-probe.mjs', import.meta.url))

const ALLOWED_HOST = '198.18.1.10'
const OTHER_HOST = '198.18.1.11'
const NTP_POOL = '198.18.1.20'
const NTP_OTHER = '198.18.1.21'
const ALLOWED_BODY = 'hello from the real allowed.example'
const OTHER_BODY = 'hello from other.example'
// IPv6-only names and hosts (2001:db8::/32, documentation space, not private for egressd).
const ALLOWED6_HOST = '2001:db8:1::10'
const OTHER6_HOST = '2001:db8:1::11'
const NTP_POOL6 = '2001:db8:1::20'
const ALLOWED6_BODY = 'hello from allowed6.example over IPv6'
const OTHER6_BODY = 'hello from other6.example over IPv6'

const skip = await missingPrerequisite()
if (skip) t.comment(`skipping the network-namespace gateway test: ${skip}`)

t.test('a device behind the gateway reaches exactly the allowed names', { skip: skip ?? false }, async (t) => {
  const stale = await Topology.reapStale()
  if (stale.length > 0) t.comment(`removed namespaces left by a killed run: ${stale.join(', ')}`)
  const topo = new Topology(process.pid)
  const dir = mkdtempSync(join(tmpdir(), 'egressd-netns-'))
  let world: NsProcess | null = null
  let daemon: NsProcess | null = null
  t.teardown(async () => {
    await daemon?.stop()
    await world?.stop(2000)
    await topo.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })
  const { dev, gw } = topo.ns
  await topo.build([ALLOWED_HOST, OTHER_HOST, NTP_POOL, NTP_OTHER, ALLOWED6_HOST, OTHER6_HOST, NTP_POOL6])

  // The fake internet.
  const ca = createTestCa()
  const file = (name: string, text: string) => {
    const p = join(dir, name)
    writeFileSync(p, text)
    return p
  }
  const caFile = file('ca.pem', ca.cert)
  const https = [
    { host: ALLOWED_HOST, name: 'allowed.example', body: ALLOWED_BODY },
    { host: OTHER_HOST, name: 'other.example', body: OTHER_BODY },
    { host: ALLOWED6_HOST, name: 'allowed6.example', body: ALLOWED6_BODY },
    { host: OTHER6_HOST, name: 'other6.example', body: OTHER6_BODY },
  ].map(({ host, name, body }) => {
    const leaf = ca.issue([name])
    return { host, port: 443, certFile: file(`${name}.pem`, leaf.cert), keyFile: file(`${name}.key`, leaf.key), body }
  })
  const spec = {
    dns: {
      host: WORLD,
      port: 53,
      zone: {
        'allowed.example': ALLOWED_HOST, 'other.example': OTHER_HOST, 'ntp.example': [NTP_POOL, NTP_POOL6],
        'allowed6.example': ALLOWED6_HOST, 'other6.example': OTHER6_HOST,
      },
    },
    https,
    // 443/udp on the allowed hosts: where QUIC would land if the gateway let it through.
    udp: [NTP_POOL, NTP_OTHER, NTP_POOL6].map((host) => ({ host, port: 123 })).concat([ALLOWED_HOST, ALLOWED6_HOST].map((host) => ({ host, port: 443 }))),
  }
  world = spawnInNs(topo.ns.world, [WORLD_SCRIPT, file('world.json', JSON.stringify(spec))])
  await world.waitFor((l) => l.ev === 'ready', 'world ready')
  const events = (ev: string, pred: (l: JsonLine) => boolean = () => true) => world!.lines.filter((l) => l.ev === ev && pred(l))
  /** The world reports on its own pipe: a client being done does not mean its line was read yet. */
  const reported = (ev: string, n: number) => world!.waitFor(() => events(ev).length >= n, `${n} "${ev}" reports from the world`)

  // The gateway: the shipped ruleset with its defines set, then the built daemon.
  const ruleset = file(
    'egressd.nft',
    templateWithDefines({ DEVICE_IF: '"lan0"', WAN_IF: '"wan0"', EGRESSD_SNI_PORT: '8443', EGRESSD_DNS_PORT: '53' }),
  )
  await inNs(gw, 'nft', '-f', ruleset)
  const config = file(
    'egressd.yaml',
    [
      'dns:',
      `  listen: ["${GATEWAY_LAN}:53", "[${GATEWAY_LAN6}]:53", "127.0.0.1:53"]`,
      `  upstreams: ["${WORLD}:53"]`,
      '  clients: [192.168.77.0/24, "fd77::/64", 127.0.0.0/8]',
      'sni:',
      `  listen: ["${GATEWAY_LAN}:8443", "[${GATEWAY_LAN6}]:8443"]`,
      '  upstream_port: 443',
      '  allow_private_destinations: false',
      'metrics:',
      '  listen: "127.0.0.1:9153"',
      'firewall:',
      '  nftables:',
      '    enabled: true',
      '    table: egressd',
      'allow: ["allowed.example", "allowed6.example", {name: "ntp.example", ports: [123/udp]}]',
      '',
    ].join('\n'),
  )
  daemon = spawnInNs(gw, [CLI, 'run', '-c', config])
  await daemon.waitFor(logMsg('ready'), 'egressd ready')
  t.ok(daemon.lines.some(logMsg('nftables sets ready')), 'the firewall sink found or made its sets')

  const resolvConf = await topo.deviceResolvConf(GATEWAY_LAN)
  if (!resolvConf) t.comment('/etc/netns is not writable: curl gets the address from dig through --resolve instead')

  const dig = async (server: string, name: string) => {
    const r = await runInNs(dev, ['dig', `@${server}`, name, 'A', '+tries=1', '+time=2'])
    return { status: /status: ([A-Z]+)/.exec(r.stdout)?.[1] ?? 'none', addresses: [...r.stdout.matchAll(/^\S+\s+\d+\s+IN\s+A\s+(\S+)$/gm)].map((m) => m[1]), text: r.stdout }
  }
  const curl = (url: string, ...extra: string[]) =>
    runInNs(dev, ['curl', '-sS', '--max-time', '5', '--cacert', caFile, '-w', '\n%{remote_ip}', ...extra, url])
  const sClient = (connect: string, servername: string) =>
    runInNs(dev, ['sh', '-c', `timeout 5 openssl s_client -connect ${connect} -servername ${servername} -CAfile ${caFile} </dev/null 2>&1`])
  const udpSend = async (addr: string, port: number, text: string, waitMs: number) => {
    const r = await runInNs(dev, [process.execPath, UDP_PROBE, 'send', addr, String(port), text, String(waitMs)])
    if (r.code !== 0) throw new Error(`udp-probe failed (${r.code}): ${r.stderr}`)
    return (JSON.parse(r.stdout) as { reply: string | null }).reply
  }
  const counter = (name: string) => nftCounter(gw, 'egressd', name)
  const allow4 = async () => (await listSet(gw, 'egressd', 'allow4')).map((e) => e.key).sort()
  /**
   * A datagram that passes, sent after ones that must not: once its reply is back and
   * the world reported it, everything sent before it along the same path has been
   * decided, so "nothing else arrived" is an ordering fact, not a timing guess.
   */
  let markers = 0
  const marker = async (t: Tap) => {
    const text = `marker ${++markers}`
    t.equal(await udpSend(NTP_POOL, 123, text, 3000), `pong ${text}`, `${text}: an allowed datagram passes afterwards`)
    await world!.waitFor((l) => l.ev === 'udp' && l.data === text, text)
  }

  t.test('the world answers directly (so what the device misses below is the gateway)', async (t) => {
    const r = await runInNs(gw, ['curl', '-sS', '--max-time', '5', '--cacert', caFile, '--resolve', `other.example:443:${OTHER_HOST}`, 'https://other.example/'])
    t.equal(r.stdout, OTHER_BODY, `${OTHER_HOST} serves other.example`)
    await reported('tcp', 1)
    t.equal(events('tcp', (l) => l.server === OTHER_HOST).length, 1, 'and reports the connection')
  })
  const otherTcpBefore = () => events('tcp', (l) => l.server === OTHER_HOST).length

  t.test('before any DNS answer, NTP to the pool address is dropped', async (t) => {
    const dropped = await counter('dropped_forward')
    t.equal(await udpSend(NTP_POOL, 123, 'too early', 300), null, 'no reply')
    t.equal(await awaitCounter(gw, 'egressd', 'dropped_forward', dropped + 1), dropped + 1, 'counted in dropped_forward')
    t.same(await allow4(), [], 'the allow set is empty')
    t.equal(events('udp').length, 0, 'nothing reached the world')
  })

  t.test('the first NTP packet right after the DNS answer passes', async (t) => {
    const r = await runInNs(dev, [process.execPath, UDP_PROBE, 'resolve-send', GATEWAY_LAN, 'ntp.example', '123', 'first', '3000'])
    t.equal(r.code, 0, `the probe ran ${r.stderr}`)
    t.same(JSON.parse(r.stdout), { rcode: 'NOERROR', address: NTP_POOL, reply: 'pong first' }, 'answered, and the datagram sent in the same tick got its reply')
    await reported('udp', 1)
    t.same(events('udp').map((l) => [l.server, l.port, l.data, l.from]), [[NTP_POOL, 123, 'first', GATEWAY_WAN]], 'the world saw exactly that datagram, masqueraded')
    t.same(await allow4(), [`${NTP_POOL} . udp . 123`], 'one element, for the port of the rule that allowed the name')
    const ntp = await dig(GATEWAY_LAN, 'ntp.example')
    t.same([ntp.status, ntp.addresses], ['NOERROR', [NTP_POOL]], 'dig sees the same answer (from the cache)')
  })

  t.test('NTP to any other address, or another port of the pool address, is dropped', async (t) => {
    const dropped = await counter('dropped_forward')
    t.equal(await udpSend(NTP_OTHER, 123, 'elsewhere', 300), null, `no reply from ${NTP_OTHER}:123`)
    t.equal(await udpSend(NTP_POOL, 124, 'other port', 300), null, `no reply from ${NTP_POOL}:124`)
    t.equal(await awaitCounter(gw, 'egressd', 'dropped_forward', dropped + 2), dropped + 2, 'both counted in dropped_forward')
    await marker(t)
    t.same(events('udp', (l) => l.server === NTP_OTHER), [], `nothing reached ${NTP_OTHER}`)
  })

  t.test('QUIC (udp 443) is dropped, even to an allowed host', async (t) => {
    const quic = await counter('dropped_quic')
    t.equal(await udpSend(ALLOWED_HOST, 443, 'quic initial', 300), null, 'no reply')
    t.equal(await awaitCounter(gw, 'egressd', 'dropped_quic', quic + 1), quic + 1, 'counted in dropped_quic')
    await marker(t)
    t.same(events('udp', (l) => l.port === 443), [], 'nothing reached udp 443 in the world')
  })

  t.test('DNS: allowed names resolve, blocked names are NXDOMAIN and never asked upstream', async (t) => {
    const allowed = await dig(GATEWAY_LAN, 'allowed.example')
    t.same([allowed.status, allowed.addresses], ['NOERROR', [ALLOWED_HOST]], 'allowed.example resolves to its real host')
    t.ok((await allow4()).includes(`${ALLOWED_HOST} . tcp . 443`), 'and its address is in the allow set for 443/tcp')
    t.equal((await dig(GATEWAY_LAN, 'other.example')).status, 'NXDOMAIN', 'other.example exists in the world but is blocked')
    t.equal((await dig(GATEWAY_LAN, 'nothing.example')).status, 'NXDOMAIN', 'a name nobody has: NXDOMAIN too')
    t.equal((await dig(WORLD, 'other.example')).status, 'NXDOMAIN', 'a hard-coded resolver is redirected to egressd too')
    t.same(events('dns', (l) => l.name !== 'allowed.example' && l.name !== 'ntp.example'), [], 'the world was asked only for allowed names')
    t.notOk((await allow4()).some((k) => k.startsWith(OTHER_HOST)), 'no element for the blocked name')
  })

  t.test('HTTPS to an allowed name goes through the redirect to its real host', async (t) => {
    const extra = resolvConf ? [] : ['--resolve', `allowed.example:443:${(await dig(GATEWAY_LAN, 'allowed.example')).addresses[0]}`]
    const seen = events('https').length
    const r = await curl('https://allowed.example/', ...extra)
    t.equal(r.code, 0, `curl succeeded ${r.stderr}`)
    t.equal(r.stdout, `${ALLOWED_BODY}\n${ALLOWED_HOST}`, 'the body of the real host, at the address DNS gave')
    await reported('https', seen + 1)
    const https = events('https').slice(seen)
    t.same(
      https.map((l) => [l.server, l.servername, l.remote]),
      [[ALLOWED_HOST, 'allowed.example', GATEWAY_WAN]],
      'the world saw one TLS request for allowed.example, dialled by the gateway',
    )
    const s = await sClient(`${ALLOWED_HOST}:443`, 'allowed.example')
    t.match(s.stdout, /Verify return code: 0 \(ok\)/, 'openssl s_client verifies the chain')
    t.match(s.stdout, /subject=CN\s*=\s*allowed\.example/, "with allowed.example's certificate")
  })

  t.test('blocked names are reset', async (t) => {
    if (resolvConf) {
      const r = await curl('https://other.example/')
      t.equal(r.code, 6, 'curl cannot even resolve a blocked name')
    }
    const r = await curl('https://other.example/', '--resolve', `other.example:443:${OTHER_HOST}`)
    t.not(r.code, 0, 'curl fails')
    t.match(r.stderr, /reset by peer/i, `with a reset (${r.stderr.trim()})`)
    t.notMatch(r.stdout, OTHER_BODY, 'and no body')
    const s = await sClient(`${OTHER_HOST}:443`, 'other.example')
    t.not(s.code, 0, 'openssl s_client fails')
    t.match(s.stdout, /errno=104|reset by peer/i, 'with a reset')
    const nosuch = await sClient(`${ALLOWED_HOST}:443`, 'nothing.example')
    t.match(nosuch.stdout, /errno=104|reset by peer/i, 'a blocked SNI to an allowed address: reset too')
    t.equal(otherTcpBefore(), 1, `${OTHER_HOST} got no connection from the device`)
  })

  t.test('a hard-coded address with an allowed SNI reaches the real host of the name', async (t) => {
    const seen = events('https').length
    const r = await curl('https://allowed.example/', '--resolve', `allowed.example:443:${OTHER_HOST}`)
    t.equal(r.code, 0, `curl succeeded ${r.stderr}`)
    t.equal(r.stdout, `${ALLOWED_BODY}\n${OTHER_HOST}`, `curl dialled ${OTHER_HOST}, and the body came from allowed.example's host`)
    await reported('https', seen + 1)
    t.same(events('https').slice(seen).map((l) => l.server), [ALLOWED_HOST], 'the request landed on allowed.example')
    const s = await sClient(`${OTHER_HOST}:443`, 'allowed.example')
    t.match(s.stdout, /subject=CN\s*=\s*allowed\.example/, `openssl to ${OTHER_HOST} gets allowed.example's certificate`)
    t.match(s.stdout, /Verify return code: 0 \(ok\)/, 'which verifies')
    t.equal(otherTcpBefore(), 1, `${OTHER_HOST} itself never saw the device`)
  })

  t.test("egressd's metrics count what the device did", async (t) => {
    const r = await runInNs(gw, ['curl', '-sS', '--max-time', '5', 'http://127.0.0.1:9153/metrics'])
    const sample = (series: string) => {
      const line = r.stdout.split('\n').find((l) => l.startsWith(series + ' '))
      return line ? Number(line.slice(series.length + 1)) : NaN
    }
    t.equal(sample('egressd_sni_connections_total{verdict="allowed"}'), 4, 'curl and s_client, to the real and to a hard-coded address')
    t.equal(sample('egressd_sni_connections_total{verdict="blocked"}'), 3, 'curl and s_client with blocked names')
    t.equal(sample('egressd_blocked_total{protocol="sni",name="other.example"}'), 2, 'other.example twice by SNI')
    // dig asked twice; curl's getaddrinfo asks for A and AAAA (glibc sends both, but
    // may give up on the second once the first says NXDOMAIN).
    const dnsBlocked = sample('egressd_blocked_total{protocol="dns",name="other.example"}')
    if (resolvConf) t.ok(dnsBlocked === 3 || dnsBlocked === 4, `other.example blocked by DNS for dig twice and curl (${dnsBlocked})`)
    else t.equal(dnsBlocked, 2, 'other.example blocked by DNS for dig twice')
    t.notOk(sample('egressd_firewall_errors_total{reason="nft"}') > 0, 'no nft batch failed')
    t.equal(await counter('dropped_input'), 0, 'nothing the device sent to the gateway itself was dropped')
    t.equal(await counter('dropped_dns_bypass'), 0, 'no DNS escaped the redirect')
  })

  // IPv6, the same paths again: the ruleset's ip6 rules and @allow6, egressd's IPv6
  // listeners, AAAA answers into the sink, and the SNI proxy dialling an IPv6 host.
  const dig6 = async (server: string, name: string) => {
    const r = await runInNs(dev, ['dig', `@${server}`, name, 'AAAA', '+tries=1', '+time=2'])
    return { status: /status: ([A-Z]+)/.exec(r.stdout)?.[1] ?? 'none', addresses: [...r.stdout.matchAll(/^\S+\s+\d+\s+IN\s+AAAA\s+(\S+)$/gm)].map((m) => m[1]) }
  }
  const allow6 = async () => (await listSet(gw, 'egressd', 'allow6')).map((e) => e.key).sort()

  t.test('IPv6: NTP passes only to an address an AAAA answer gave', async (t) => {
    const dropped = await counter('dropped_forward')
    t.equal(await udpSend(NTP_POOL6, 123, 'v6 too early', 300), null, 'before the answer: no reply')
    t.equal(await awaitCounter(gw, 'egressd', 'dropped_forward', dropped + 1), dropped + 1, 'counted in dropped_forward')
    t.same(await allow6(), [], 'the IPv6 allow set is empty: the A answers added nothing to it')
    const ntp = await dig6(GATEWAY_LAN6, 'ntp.example')
    t.same([ntp.status, ntp.addresses], ['NOERROR', [NTP_POOL6]], 'AAAA answered over IPv6 by egressd')
    t.same(await allow6(), [`${NTP_POOL6} . udp . 123`], 'one element, for the port of the rule')
    t.equal(await udpSend(NTP_POOL6, 123, 'v6 after', 3000), 'pong v6 after', 'after the answer: the reply comes back')
    await world!.waitFor((l) => l.ev === 'udp' && l.data === 'v6 after', 'the v6 datagram reported')
    t.same(
      events('udp', (l) => l.server === NTP_POOL6).map((l) => [l.data, l.from]),
      [['v6 after', GATEWAY_WAN6]],
      'the world saw only the datagram sent after the answer, masqueraded to the gateway',
    )
  })

  t.test('IPv6: blocked names are NXDOMAIN, also from a hard-coded IPv6 resolver', async (t) => {
    t.equal((await dig6(GATEWAY_LAN6, 'other6.example')).status, 'NXDOMAIN')
    t.equal((await dig6(WORLD6, 'other6.example')).status, 'NXDOMAIN', 'DNS to the world over IPv6 is redirected to egressd')
    t.same(events('dns', (l) => l.name === 'other6.example'), [], 'the world was never asked')
    t.notOk((await allow6()).some((k) => k.startsWith(OTHER6_HOST)), 'no element for the blocked name')
  })

  t.test('IPv6: HTTPS to an allowed name through the redirect, dialled by egressd over IPv6', async (t) => {
    const address = (await dig6(GATEWAY_LAN6, 'allowed6.example')).addresses[0]
    t.equal(address, ALLOWED6_HOST)
    const extra = resolvConf ? [] : ['--resolve', `allowed6.example:443:[${address}]`]
    const seen = events('https').length
    const r = await curl('https://allowed6.example/', ...extra)
    t.equal(r.code, 0, `curl succeeded ${r.stderr}`)
    t.equal(r.stdout, `${ALLOWED6_BODY}\n${ALLOWED6_HOST}`, 'the body of the real host, at the address DNS gave')
    await reported('https', seen + 1)
    t.same(
      events('https').slice(seen).map((l) => [l.server, l.servername, l.remote]),
      [[ALLOWED6_HOST, 'allowed6.example', GATEWAY_WAN6]],
      'the world saw one TLS request, from the gateway',
    )
    const s = await sClient(`[${OTHER6_HOST}]:443`, 'allowed6.example')
    t.match(s.stdout, /subject=CN\s*=\s*allowed6\.example/, `an allowed SNI sent to ${OTHER6_HOST} gets allowed6.example's certificate`)
    t.match(s.stdout, /Verify return code: 0 \(ok\)/, 'which verifies')
  })

  t.test('IPv6: a blocked SNI is reset and never reaches the world', async (t) => {
    const r = await curl('https://other6.example/', '--resolve', `other6.example:443:[${OTHER6_HOST}]`)
    t.not(r.code, 0, 'curl fails')
    t.match(r.stderr, /reset by peer/i, `with a reset (${r.stderr.trim()})`)
    t.equal(events('tcp', (l) => l.server === OTHER6_HOST).length, 0, `${OTHER6_HOST} got no connection at all`)
  })

  t.test('IPv6: QUIC is dropped and counted', async (t) => {
    const quic = await counter('dropped_quic')
    t.equal(await udpSend(ALLOWED6_HOST, 443, 'v6 quic initial', 300), null, 'no reply')
    t.equal(await awaitCounter(gw, 'egressd', 'dropped_quic', quic + 1), quic + 1, 'counted in dropped_quic')
    t.same(events('udp', (l) => l.server === ALLOWED6_HOST), [], 'nothing reached udp 443 in the world')
    t.equal(await counter('dropped_input'), 0, 'the gateway itself refused nothing the device sent (neighbour discovery included)')
  })
})

// Scope device: the same gateway with `firewall.nftables.scope: device` and the ruleset's
// EGRESSD_SCOPE set to device_scope. Device B is a second source address on the segment
// (192.168.77.3, fd77::3): the gateway's rules tell devices apart by source address and
// nothing else, so that is what a second device is to them.
const DEVICE_A = '192.168.77.2'
const DEVICE_B = '192.168.77.3'
const DEVICE_A6 = 'fd77::2'
const DEVICE_B6 = 'fd77::3'
/** Short enough to watch an element expire: TTL 2 s + grace 2 s. */
const SHORT_TTL = 2
const SHORT_GRACE = 2

/** The device-scope tests' segment; `t` ends it: egressd, the world, the namespaces and the files. */
interface DeviceSegment {
  readonly topo: Topology
  readonly dir: string
  world: NsProcess | null
  daemon: NsProcess | null
}

function deviceSegment(t: Tap, prefix: string): DeviceSegment {
  const seg: DeviceSegment = { topo: new Topology(process.pid), dir: mkdtempSync(join(tmpdir(), prefix)), world: null, daemon: null }
  t.teardown(async () => {
    await seg.daemon?.stop()
    await seg.world?.stop(2000)
    await seg.topo.cleanup()
    rmSync(seg.dir, { recursive: true, force: true })
  })
  return seg
}

/**
 * Starts the world (ntp.example → both NTP pools, answered with `ttl`), loads the ruleset
 * with EGRESSD_SCOPE = `scopeChain`, then egressd in scope device (plus `firewall`'s
 * lines under firewall.nftables) allowing ntp.example on 123/udp; resolves once ready.
 */
async function startDeviceGateway(seg: DeviceSegment, o: { ttl: number; scopeChain: string; metrics: string; firewall: string[] }): Promise<NsProcess> {
  const file = (name: string, text: string) => {
    const p = join(seg.dir, name)
    writeFileSync(p, text)
    return p
  }
  const spec = { dns: { host: WORLD, port: 53, ttl: o.ttl, zone: { 'ntp.example': [NTP_POOL, NTP_POOL6] } }, https: [], udp: [NTP_POOL, NTP_POOL6].map((host) => ({ host, port: 123 })) }
  seg.world = spawnInNs(seg.topo.ns.world, [WORLD_SCRIPT, file('world.json', JSON.stringify(spec))])
  await seg.world.waitFor((l) => l.ev === 'ready', 'world ready')
  const gw = seg.topo.ns.gw
  await inNs(gw, 'nft', '-f', file('egressd.nft', templateWithDefines({ DEVICE_IF: '"lan0"', WAN_IF: '"wan0"', EGRESSD_SNI_PORT: '8443', EGRESSD_DNS_PORT: '53', EGRESSD_SCOPE: `"${o.scopeChain}"` })))
  const config = file(
    'egressd.yaml',
    [
      'dns:',
      `  listen: ["${GATEWAY_LAN}:53", "[${GATEWAY_LAN6}]:53"]`,
      `  upstreams: ["${WORLD}:53"]`,
      '  clients: [192.168.77.0/24, "fd77::/64"]',
      'sni:',
      `  listen: ["${GATEWAY_LAN}:8443"]`,
      'metrics:',
      `  listen: ${o.metrics}`,
      'firewall:',
      '  nftables:',
      '    enabled: true',
      '    scope: device',
      ...o.firewall,
      'allow: [{name: "ntp.example", ports: [123/udp]}]',
      '',
    ].join('\n'),
  )
  seg.daemon = spawnInNs(gw, [CLI, 'run', '-c', config])
  await seg.daemon.waitFor(logMsg('ready'), 'egressd ready')
  return seg.daemon
}

t.test('scope device: an answer opens the destination only for the device that asked', { skip: skip ?? false }, async (t) => {
  const seg = deviceSegment(t, 'egressd-netns-dev-')
  const { dev, gw } = seg.topo.ns
  await seg.topo.build([NTP_POOL, NTP_POOL6])
  await inNs(dev, 'ip', 'addr', 'add', `${DEVICE_B}/24`, 'dev', 'eth0')
  await inNs(dev, 'ip', '-6', 'addr', 'add', `${DEVICE_B6}/64`, 'dev', 'eth0', 'nodad')
  const daemon = await startDeviceGateway(seg, { ttl: SHORT_TTL, scopeChain: 'device_scope', metrics: 'null', firewall: [`    grace_seconds: ${SHORT_GRACE}`] })
  const world = seg.world
  t.match(daemon.lines.find(logMsg('nftables sets ready')), { scope: 'device', otherScope: 'emptied' }, 'device sets ready; the shared ones emptied (the ruleset names them)')

  const probe = async (from: string, args: string[], qtype = 'A') => {
    const r = await runInNs(dev, ['env', `FROM=${from}`, `QTYPE=${qtype}`, process.execPath, UDP_PROBE, ...args])
    if (r.code !== 0) throw new Error(`udp-probe failed (${r.code}): ${r.stderr}`)
    return JSON.parse(r.stdout) as { reply: string | null; rcode?: string; address?: string }
  }
  const counter = (name: string) => nftCounter(gw, 'egressd', name)
  const elements = async (set: string) => (await listSet(gw, 'egressd', set))

  for (const fam of [
    { name: 'IPv4', dns: GATEWAY_LAN, pool: NTP_POOL, a: DEVICE_A, b: DEVICE_B, set: 'allow4_dev', qtype: 'A' },
    { name: 'IPv6', dns: GATEWAY_LAN6, pool: NTP_POOL6, a: DEVICE_A6, b: DEVICE_B6, set: 'allow6_dev', qtype: 'AAAA' },
  ]) {
    await t.test(`${fam.name}: A resolves and reaches the pool; B, which never asked, is dropped; B asks and passes; the element expires at TTL + grace`, async (t) => {
      const r = await probe(fam.a, ['resolve-send', fam.dns, 'ntp.example', '123', `${fam.name} A first`, '3000'], fam.qtype)
      t.same([r.rcode, r.address, r.reply], ['NOERROR', fam.pool, `pong ${fam.name} A first`], 'A: answered, and the datagram sent in the same tick passed')
      const els = await elements(fam.set)
      t.same(els.map((e) => e.key), [`${fam.a} . ${fam.pool} . udp . 123`], 'one element, keyed by A')
      t.equal(els[0]!.timeout, SHORT_TTL + SHORT_GRACE, 'timeout = TTL + grace')

      const dropped = await counter('dropped_forward')
      t.equal((await probe(fam.b, ['send', fam.pool, '123', `${fam.name} B unasked`, '300'])).reply, null, 'B, same address and port, never asked: no reply')
      t.equal(await awaitCounter(gw, 'egressd', 'dropped_forward', dropped + 1), dropped + 1, 'dropped and counted')
      t.same(world!.lines.filter((l) => l.ev === 'udp' && l.data === `${fam.name} B unasked`), [], 'nothing of B reached the world')

      // B's answer comes from egressd's cache (A's answer, a second ago): a cache hit
      // must still write B's own element before the answer leaves.
      const rb = await probe(fam.b, ['resolve-send', fam.dns, 'ntp.example', '123', `${fam.name} B asked`, '3000'], fam.qtype)
      t.same([rb.rcode, rb.reply], ['NOERROR', `pong ${fam.name} B asked`], 'B asked, then passed')
      t.same((await elements(fam.set)).map((e) => e.key).sort(), [`${fam.a} . ${fam.pool} . udp . 123`, `${fam.b} . ${fam.pool} . udp . 123`].sort())

      // Expiry: A's element lives TTL + grace from its write; poll its disappearance (bounded).
      const t0 = Date.now()
      while ((await elements(fam.set)).some((e) => e.key.startsWith(`${fam.a} . `)) && Date.now() - t0 < (SHORT_TTL + SHORT_GRACE + 3) * 1000) {
        await new Promise((res) => setTimeout(res, 100))
      }
      t.notOk((await elements(fam.set)).some((e) => e.key.startsWith(`${fam.a} . `)), `A's element expired (after ${Date.now() - t0} ms of polling)`)
      const before = await counter('dropped_forward')
      t.equal((await probe(fam.a, ['send', fam.pool, '123', `${fam.name} A late`, '300'])).reply, null, 'A after expiry, without asking again: dropped')
      t.equal(await awaitCounter(gw, 'egressd', 'dropped_forward', before + 1), before + 1)
      // Let B's element expire too, so the next family starts from empty sets.
      const t1 = Date.now()
      while ((await elements(fam.set)).length > 0 && Date.now() - t1 < (SHORT_TTL + SHORT_GRACE + 3) * 1000) await new Promise((res) => setTimeout(res, 100))
    })
  }
  t.same(await elements('allow4'), [], 'nothing was ever written to the shared sets')
})

// device_key mac: the gateway keys elements by the device's MAC (ruleset EGRESSD_SCOPE
// device_mac_scope), so an answer of either family opens its address for the device,
// whichever family it asked over. Device B is a second MAC on the segment (a macvlan
// in a namespace of its own, Topology.addDevice): the rules tell devices apart by
// source MAC, so a second address on A's interface would be A.
t.test('scope device, device_key mac: a device reaches the other family\'s answer; another MAC is dropped', { skip: skip ?? false }, async (t) => {
  const seg = deviceSegment(t, 'egressd-netns-mac-')
  const { dev, gw } = seg.topo.ns
  await seg.topo.build([NTP_POOL, NTP_POOL6])
  const devB = await seg.topo.addDevice(DEVICE_B, DEVICE_B6)
  const macA = await macOf(dev, 'eth0')
  t.not(macA, devB.mac, `two MACs on the segment: A ${macA}, B ${devB.mac}`)
  const daemon = await startDeviceGateway(seg, { ttl: 60, scopeChain: 'device_mac_scope', metrics: '"127.0.0.1:9153"', firewall: ['    device_key: mac'] })
  const world = seg.world
  t.match(daemon.lines.find(logMsg('nftables sets ready')), { scope: 'device', deviceKey: 'mac', sets: ['allow4_mac', 'allow6_mac'], otherScope: 'emptied' })

  const probe = async (ns: string, args: string[], qtype = 'A') => {
    const r = await runInNs(ns, ['env', `QTYPE=${qtype}`, process.execPath, UDP_PROBE, ...args])
    if (r.code !== 0) throw new Error(`udp-probe failed (${r.code}): ${r.stderr}`)
    return JSON.parse(r.stdout) as { reply: string | null; rcode?: string; address?: string }
  }
  const keys = async (set: string) => (await listSet(gw, 'egressd', set)).map((e) => e.key).sort()
  const counter = (name: string) => nftCounter(gw, 'egressd', name)

  for (const c of [
    { name: 'asks over IPv4 for an AAAA, reaches the IPv6 address', dns: GATEWAY_LAN, qtype: 'AAAA', pool: NTP_POOL6, set: 'allow6_mac' },
    { name: 'asks over IPv6 for an A, reaches the IPv4 address', dns: GATEWAY_LAN6, qtype: 'A', pool: NTP_POOL, set: 'allow4_mac' },
  ]) {
    await t.test(`A ${c.name}; B, another MAC, is dropped`, async (t) => {
      const r = await probe(dev, ['resolve-send', c.dns, 'ntp.example', '123', `A ${c.qtype}`, '3000'], c.qtype)
      t.same([r.rcode, r.address, r.reply], ['NOERROR', c.pool, `pong A ${c.qtype}`], 'answered, and the datagram sent in the same tick passed')
      t.same(await keys(c.set), [`${macA} . ${c.pool} . udp . 123`], "one element, keyed by A's MAC")
      const dropped = await counter('dropped_forward')
      t.equal((await probe(devB.ns, ['send', c.pool, '123', `B ${c.qtype} unasked`, '300'])).reply, null, 'B, same address and port, never asked: no reply')
      t.equal(await awaitCounter(gw, 'egressd', 'dropped_forward', dropped + 1), dropped + 1, 'dropped and counted')
      t.same(world!.lines.filter((l) => l.ev === 'udp' && l.data === `B ${c.qtype} unasked`), [], 'nothing of B reached the world')
    })
  }

  await t.test('B asks over IPv4 for the AAAA (a cache hit) and passes, under its own MAC', async (t) => {
    const r = await probe(devB.ns, ['resolve-send', GATEWAY_LAN, 'ntp.example', '123', 'B asked', '3000'], 'AAAA')
    t.same([r.rcode, r.reply], ['NOERROR', 'pong B asked'])
    t.same(await keys('allow6_mac'), [`${macA} . ${NTP_POOL6} . udp . 123`, `${devB.mac} . ${NTP_POOL6} . udp . 123`].sort())
    t.same(await keys('allow4_dev'), [], 'nothing in the address-keyed sets')
    t.same(await keys('allow6_dev'), [])
    const m = await runInNs(gw, ['curl', '-sS', '--max-time', '5', 'http://127.0.0.1:9153/metrics'])
    t.match(m.stdout, /^egressd_firewall_cross_family_total 0$/m, 'no answer skipped for its family')
    t.match(m.stdout, /^egressd_firewall_no_neighbour_total 0$/m, 'every client was found in the neighbour table')
  })
})
