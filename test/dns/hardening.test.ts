/**
 * Issue 17: the DNS side under attack. DnsService in-process against a dns2 fake
 * upstream on loopback, driven by raw sockets and dig/kdig.
 */
import t from 'tap'
import dgram from 'node:dgram'
import dnsPacket from 'dns-packet'
import { Observations } from '../../src/suggest/observe.js'
import { render } from '../../src/suggest/render.js'
import {
  cidr,
  decode,
  edes,
  fakeUpstream,
  makeConfig,
  metric,
  query,
  STANDARD_POLICY,
  standardZone,
  startService,
  dig,
  hasTool,
  tcpClient,
  udpExchange,
  type Zone,
} from './helpers.js'

/** 220 TXT records of 240 bytes: an answer of ~60 KB that a UDP client with a 64 KB buffer would be sent whole. */
const HUGE_TXT = 220

const zone: Zone = async (q) => {
  const name = q.name.toLowerCase()
  const rr = (type: string, data: unknown, ttl = 300, owner = q.name) => ({ type, name: owner, ttl, data }) as dnsPacket.Answer
  if (name === 'cnameout.allowed.example' || name === 'cnameout2.allowed.example')
    return { answers: [rr('CNAME', 'tracker.blocked.example', 100), rr('A', '93.184.216.99', 50, 'tracker.blocked.example')] }
  if (name === 'cnamedeny.allowed.example')
    return { answers: [rr('CNAME', 'denied.allowed.example', 100), rr('A', '93.184.216.98', 50, 'denied.allowed.example')] }
  if (name === 'cnameonly-out.allowed.example') return { answers: [rr('CNAME', 'tracker.blocked.example', 100)] }
  if (name === 'tracker.blocked.example') return { answers: [rr('A', '127.0.0.1', 50)] }
  if (name === 'x.dname.allowed.example')
    return { answers: [{ type: 'DNAME', name: 'dname.allowed.example', ttl: 100, data: 'blocked.example' } as dnsPacket.Answer, rr('A', '93.184.216.97', 50, 'x.blocked.example')] }
  if (name === 'huge.allowed.example' && q.type === 'TXT') {
    return { answers: Array.from({ length: HUGE_TXT }, (_, i) => rr('TXT', [String(i).padStart(4, '0') + 'x'.repeat(236)], 60)) }
  }
  return standardZone(q)
}

const noDig = (await hasTool('dig')) ? false : 'dig not installed'
const noKdig = (await hasTool('kdig')) ? false : 'kdig not installed'

const up = await fakeUpstream(zone)
t.teardown(() => up.close())
const sinkNames: string[] = []
const s = await startService(makeConfig({ upstreams: [up.hostPort] }, STANDARD_POLICY), {
  onAllowedAnswer: async ({ name }) => void sinkNames.push(name),
})
t.teardown(() => s.close())
const port = s.port

t.test('item 3: no UDP amplification; the EDNS payload size is capped at dns.max_udp_payload', async (t) => {
  const q = query('huge.allowed.example', 'TXT', { edns: true, udpSize: 65_535 })
  t.ok(q.length < 64, `a ${q.length}-byte query`)
  const udp = (await udpExchange(port, q))!
  t.ok(udp.length <= 1232, `UDP reply ${udp.length} bytes, at most 1232`)
  const d = decode(udp)
  t.ok(d.flag_tc, 'TC set: the client retries over TCP')
  t.equal(d.answers!.length, 0)
  const opt = d.additionals!.find((a) => a.type === 'OPT') as unknown as { udpPayloadSize: number }
  t.equal(opt.udpPayloadSize, 1232, 'our OPT advertises 1232')
  t.equal(await metric(s.registry, 'egressd_dns_truncated_total'), 1)
  const tcp = await tcpClient(port)
  tcp.send(q)
  const full = (await tcp.next())!
  tcp.sock.destroy()
  t.ok(full.length > 50_000, `TCP answer whole: ${full.length} bytes`)
  t.equal(decode(full).answers!.length, HUGE_TXT)
})

t.test('item 3: a smaller dns.max_udp_payload is advertised and honoured', async (t) => {
  const s2 = await startService(makeConfig({ upstreams: [up.hostPort], maxUdpPayload: 512 }, STANDARD_POLICY))
  t.teardown(() => s2.close())
  const big = decode((await udpExchange(s2.port, query('big.allowed.example', 'TXT', { edns: true, udpSize: 4096 })))!)
  t.ok(big.flag_tc, 'the 12-TXT answer (~900 bytes) does not fit 512')
  const opt = big.additionals!.find((a) => a.type === 'OPT') as unknown as { udpPayloadSize: number }
  t.equal(opt.udpPayloadSize, 512)
})

/** Sends `n` datagrams from one socket at once; resolves with every reply seen within `waitMs`. */
async function burst(port: number, msgs: Buffer[], waitMs = 400): Promise<Buffer[]> {
  const sock = dgram.createSocket('udp4')
  const replies: Buffer[] = []
  sock.on('message', (m) => replies.push(m))
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()))
  for (const m of msgs) sock.send(m, port, '127.0.0.1')
  await new Promise((r) => setTimeout(r, waitMs))
  sock.close()
  return replies
}

t.test('item 4: REFUSED to sources outside dns.clients is rate-limited and carries no EDE text', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort], clients: [cidr('10.0.0.0/8')] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const msgs = Array.from({ length: 60 }, (_, i) => query('allowed.example', 'A', { id: i, edns: true }))
  const replies = await burst(r0.port, msgs)
  t.ok(replies.length >= 1, 'a real client that is misconfigured still learns why')
  t.ok(replies.length <= 12, `${replies.length} of 60 answered: one shared bucket of 10/s`)
  for (const r of replies) t.equal((decode(r) as { rcode?: string }).rcode, 'REFUSED')
  t.same(edes(replies[0]!), [{ code: 18, text: '' }], 'EDE 18 Prohibited, no text')
  t.equal(await metric(r0.registry, 'egressd_dns_dropped_total', 'reason="outside_clients"'), 60 - replies.length)
})

t.test('item 4: dns.outside_clients.answer: drop answers nothing at all', async (t) => {
  const r0 = await startService(
    makeConfig({ upstreams: [up.hostPort], clients: [cidr('10.0.0.0/8')], outsideClients: { answer: 'drop', refusedQps: 10 } }, STANDARD_POLICY),
  )
  t.teardown(() => r0.close())
  const replies = await burst(r0.port, Array.from({ length: 5 }, (_, i) => query('allowed.example', 'A', { id: i })))
  t.equal(replies.length, 0)
  t.equal(await metric(r0.registry, 'egressd_dns_dropped_total', 'reason="outside_clients"'), 5)
  t.equal(await metric(r0.registry, 'egressd_dns_queries_total', 'verdict="refused"'), 5)
})

/** A query with its QCLASS replaced (dns-packet only knows the named classes). */
function classQuery(name: string, type: string, qclass: number, edns = true): Buffer {
  const q = query(name, type, { edns })
  const at = 12 + name.length + 2 + 2
  q.writeUInt16BE(qclass, at)
  return q
}

const rcodeOf = (reply: Buffer) => reply[3]! & 0x0f

t.test('item 12: allowed names in classes other than IN are refused, never forwarded', async (t) => {
  for (const [label, qclass] of [['CH', 3], ['HS', 4], ['NONE', 254], ['ANY', 255], ['0', 0]] as const) {
    const name = `class${qclass}.allowed.example`
    const reply = (await udpExchange(port, classQuery(name, 'TXT', qclass)))!
    t.equal(rcodeOf(reply), 5, `${label}: REFUSED`)
    t.equal(reply.readUInt16BE(6), 0, `${label}: no answer`)
    t.equal(up.queries.filter((q) => q.name.toLowerCase() === name).length, 0, `${label}: not forwarded`)
  }
  t.equal(await metric(s.registry, 'egressd_dns_protocol_refused_total', 'reason="class"'), 5)
})

t.test('item 12: EDNS version 1 gets BADVERS (extended RCODE 16 in our version-0 OPT)', async (t) => {
  const q = query('badvers.allowed.example', 'A', { edns: true })
  q[q.length - 5] = 1 // the OPT's VERSION byte (an OPT without options is the last 11 bytes)
  const reply = (await udpExchange(port, q))!
  t.equal(rcodeOf(reply), 0, 'header RCODE 0 …')
  const optAt = 12 + 'badvers.allowed.example'.length + 2 + 4
  t.equal(reply.readUInt16BE(10), 1, 'one additional: the OPT')
  t.equal(reply.readUInt16BE(optAt + 1), 41)
  t.equal(reply[optAt + 5], 1, '… and 1 in the OPT upper RCODE byte: BADVERS (16)')
  t.equal(reply[optAt + 6], 0, 'our OPT says version 0')
  t.equal(up.queries.filter((u) => u.name.toLowerCase() === 'badvers.allowed.example').length, 0, 'not forwarded')
  t.equal(await metric(s.registry, 'egressd_dns_protocol_refused_total', 'reason="badvers"'), 1)
})

t.test('item 12: AXFR and IXFR are refused over UDP and TCP, never forwarded', async (t) => {
  for (const type of ['AXFR', 'IXFR']) {
    const reply = (await udpExchange(port, query('allowed.example', type)))!
    t.equal(rcodeOf(reply), 5, `${type} over UDP: REFUSED`)
    const tcp = await tcpClient(port)
    tcp.send(query('allowed.example', type))
    const viaTcp = (await tcp.next())!
    tcp.sock.destroy()
    t.equal(rcodeOf(viaTcp), 5, `${type} over TCP: REFUSED`)
  }
  t.equal(up.queries.filter((u) => u.name === 'allowed.example' && !['A', 'AAAA', 'TXT'].includes(u.type)).length, 0)
  t.equal(await metric(s.registry, 'egressd_dns_protocol_refused_total', 'reason="xfr"'), 4)
})

/** An upstream answer with one A record whose owner (or CNAME target) is a compression pointer to itself. */
function loopAnswer(id: number, name: string, where: 'owner' | 'cname'): Buffer {
  const qname = Buffer.concat([...name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])])
  const header = Buffer.alloc(12)
  header.writeUInt16BE(id, 0)
  header.writeUInt16BE(0x8180, 2)
  header.writeUInt16BE(1, 4)
  header.writeUInt16BE(1, 6)
  const question = Buffer.concat([qname, Buffer.from([0, 1, 0, 1])])
  const rrAt = 12 + question.length
  if (where === 'owner') {
    const rr = Buffer.from([0xc0 | (rrAt >> 8), rrAt & 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34])
    return Buffer.concat([header, question, rr])
  }
  const rdataAt = rrAt + 2 + 10
  const rr = Buffer.from([0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0 | (rdataAt >> 8), rdataAt & 0xff])
  return Buffer.concat([header, question, rr])
}

t.test('item 12: an upstream answer with a compression loop is dropped as malformed, never relayed', async (t) => {
  const loopUp = await fakeUpstream((q) => loopAnswer(q.id, q.name, q.name.startsWith('owner') ? 'owner' : 'cname'))
  t.teardown(() => loopUp.close())
  const r0 = await startService(makeConfig({ upstreams: [loopUp.hostPort] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  for (const name of ['owner.allowed.example', 'cname.allowed.example']) {
    const reply = (await udpExchange(r0.port, query(name, 'A')))!
    t.equal(rcodeOf(reply), 2, `${name}: SERVFAIL`)
    t.equal(reply.readUInt16BE(6), 0, `${name}: nothing relayed`)
  }
  t.ok(await metric(r0.registry, 'egressd_dns_upstream_errors_total', 'reason="malformed"') >= 2, 'counted as malformed')
  const logged = r0.logs.filter((l) => l.verdict === 'upstream_error').map((l) => [l.name, l.reason])
  t.same(logged, [['owner.allowed.example', 'malformed'], ['cname.allowed.example', 'malformed']], 'and logged as such')
})

t.test('item 12: dig sees REFUSED for CH and BADVERS for EDNS version 1', { skip: noDig }, async (t) => {
  const ch = await dig('dig', port, ['version.allowed.example', 'CH', 'TXT'])
  t.equal(ch.status, 'REFUSED')
  const v1 = await dig('dig', port, ['+edns=1', '+noednsneg', 'allowed.example', 'A'])
  t.equal(v1.status, 'BADVERS')
  t.equal(up.queries.filter((u) => u.name.toLowerCase() === 'version.allowed.example').length, 0)
})

t.test('item 12: kdig sees REFUSED for CH', { skip: noKdig }, async (t) => {
  const ch = await dig('kdig', port, ['version.allowed.example', 'CH', 'TXT'])
  t.equal(ch.status, 'REFUSED')
})

/** HTTPS rdata: priority 1, target ".", alpn "h2", then the given hint params (IPv6 as 32 hex digits). */
function httpsRdata(hints: { v4?: string[]; v6?: string[] }): Buffer {
  const parts = [Buffer.from('0001' + '00' + '0001000302' + '6832', 'hex')]
  if (hints.v4) {
    const v = Buffer.concat(hints.v4.map((a) => Buffer.from(a.split('.').map(Number))))
    parts.push(Buffer.from([0, 4, v.length >> 8, v.length & 0xff]), v)
  }
  if (hints.v6) {
    const v = Buffer.concat(hints.v6.map((hex) => Buffer.from(hex, 'hex')))
    parts.push(Buffer.from([0, 6, v.length >> 8, v.length & 0xff]), v)
  }
  return Buffer.concat(parts)
}

t.test('item 2: rebinding protection sees additional A/AAAA and HTTPS/SVCB address hints', async (t) => {
  const rr = (type: string, name: string, data: unknown) => ({ type, name, ttl: 300, data }) as dnsPacket.Answer
  const hintUp = await fakeUpstream((q) => {
    const name = q.name.toLowerCase()
    if (name === 'glue.allowed.example')
      return { answers: [rr('A', q.name, '93.184.216.34')], additionals: [rr('A', 'ns.allowed.example', '192.168.1.1')] }
    if (name === 'glue6.allowed.example')
      return { answers: [rr('A', q.name, '93.184.216.34')], authorities: [rr('AAAA', 'ns.allowed.example', 'fd00::1')] }
    if (name === 'hint4.allowed.example') return { answers: [rr('UNKNOWN_65', q.name, httpsRdata({ v4: ['93.184.216.34', '10.0.0.1'] }))] }
    if (name === 'hint6.allowed.example') return { answers: [rr('UNKNOWN_65', q.name, httpsRdata({ v6: ['00000000000000000000000000000001'] }))] }
    if (name === 'public.allowed.example')
      return { answers: [rr('UNKNOWN_65', q.name, httpsRdata({ v4: ['93.184.216.34'], v6: ['26062800022000010000000000000001'] }))] }
    return { flags: 3, answers: [] }
  })
  t.teardown(() => hintUp.close())
  const r0 = await startService(makeConfig({ upstreams: [hintUp.hostPort] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  for (const [name, type] of [['glue', 'A'], ['glue6', 'A'], ['hint4', 'HTTPS'], ['hint6', 'HTTPS']] as const) {
    const q = query(`${name}.allowed.example`, type === 'HTTPS' ? 'A' : type, { edns: true })
    if (type === 'HTTPS') q.writeUInt16BE(65, q.length - 11 - 4)
    const reply = (await udpExchange(r0.port, q))!
    t.equal(rcodeOf(reply), 2, `${name}: SERVFAIL`)
    t.same(edes(reply).map((e) => e.code), [17], `${name}: EDE 17 Filtered`)
  }
  const q = query('public.allowed.example', 'A', { edns: true })
  q.writeUInt16BE(65, q.length - 11 - 4)
  const ok = (await udpExchange(r0.port, q))!
  t.equal(rcodeOf(ok), 0, 'public hints pass')
  t.equal(ok.readUInt16BE(6), 1)
  t.equal(await metric(r0.registry, 'egressd_dns_rebind_blocked_total'), 4)
})

/** A query whose QNAME is the given labels exactly (a label may hold dots, NUL, newline). */
function labelsQuery(labels: string[], type = 1): Buffer {
  const name = Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([Buffer.byteLength(l, 'latin1')]), Buffer.from(l, 'latin1')])), Buffer.from([0])])
  const header = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
  return Buffer.concat([header, name, Buffer.from([0, type, 0, 1])])
}

t.test('item 13: a label holding dots, NUL or newline is escaped \\DDD in logs, metrics and suggest input', async (t) => {
  const r0 = await startService(makeConfig({ upstreams: [up.hostPort] }, STANDARD_POLICY))
  t.teardown(() => r0.close())
  const cases: [string[], string][] = [
    [['x.allowed', 'example'], 'x\\046allowed.example'],
    [['x.allowed.example'], 'x\\046allowed\\046example'],
    [['a\0b', 'allowed', 'example'], 'a\\000b.allowed.example'],
    [['a\nb', 'allowed', 'example'], 'a\\010b.allowed.example'],
    [['A\\b', 'allowed', 'example'], 'a\\092b.allowed.example'],
  ]
  for (const [labels, shown] of cases) {
    const reply = (await udpExchange(r0.port, labelsQuery(labels)))!
    t.equal(rcodeOf(reply), 3, `${JSON.stringify(labels)}: blocked (NXDOMAIN)`)
    const line = r0.logs.filter((l) => l.verdict === 'blocked').at(-1)!
    t.equal(line.name, shown, `logged as ${shown}`)
  }
  t.notOk(r0.logs.some((l) => l.name === 'x.allowed.example'), 'never logged as the allowed name')
  const text = await r0.registry.metrics()
  t.match(text, 'name="x\\\\046allowed.example"', 'the metric label is escaped too')
  t.notOk(text.includes('name="x.allowed.example"'))
  const obs = new Observations()
  for (const l of r0.logs) obs.add(JSON.stringify(l))
  const yaml = render(obs, { threshold: 5, input: 'test' })
  t.notMatch(yaml, /x\.allowed\.example/, 'suggest never proposes the one-label name')
  t.notMatch(yaml, /allowed\.example/, 'nor anything made of it')
})

t.test('item 1: an allowed name whose CNAME chain reaches a name not allowed is blocked', async (t) => {
  for (const [name, target, why] of [
    ['cnameout.allowed.example', 'tracker.blocked.example', 'not on the allowlist'],
    ['cnamedeny.allowed.example', 'denied.allowed.example', 'denied'],
    ['x.dname.allowed.example', 'x.blocked.example', 'DNAME substitution, no synthesized CNAME'],
  ] as const) {
    for (const pass of ['miss', 'hit']) {
      const reply = (await udpExchange(port, query(name, 'A', { edns: true })))!
      t.equal(rcodeOf(reply), 3, `${name} (${why}, ${pass}): NXDOMAIN`)
      t.equal(reply.readUInt16BE(6), 0, 'no records relayed')
      t.same(edes(reply), [{ code: 15, text: `egressd: CNAME target ${target} not on allowlist` }], 'EDE 15 names the target')
    }
    const line = s.logs.filter((l) => l.reason === 'cname_blocked' && l.name === name).at(-1)
    t.match(line, { verdict: 'blocked', reason: 'cname_blocked', cname: target, protocol: 'dns' })
  }
  t.notOk(sinkNames.some((n) => n.startsWith('cname') || n.includes('dname')), 'nothing given to the firewall sink')
  t.equal(await metric(s.registry, 'egressd_dns_cname_blocked_total'), 6)
  const obs = new Observations()
  for (const l of s.logs) obs.add(JSON.stringify(l))
  const yaml = render(obs, { threshold: 5, input: 'test' })
  t.match(yaml, 'tracker.blocked.example', 'suggest proposes the target, the name to decide on')
  t.notMatch(yaml, 'denied.allowed.example', 'never a denied one')
})

t.test('item 1: block_response refused and cname_targets allow_any', async (t) => {
  const refused = await startService(makeConfig({ upstreams: [up.hostPort], blockResponse: 'refused' }, STANDARD_POLICY))
  t.teardown(() => refused.close())
  t.equal(rcodeOf((await udpExchange(refused.port, query('cnameout2.allowed.example', 'A')))!), 5, 'REFUSED')
  const any = await startService(makeConfig({ upstreams: [up.hostPort], cnameTargets: 'allow_any' }, STANDARD_POLICY))
  t.teardown(() => any.close())
  const ok = decode((await udpExchange(any.port, query('cnameout2.allowed.example', 'A')))!)
  t.equal((ok as { rcode?: string }).rcode, 'NOERROR', 'allow_any: relayed as before')
  t.equal(ok.answers!.length, 2)
})

t.test('item 1: the SNI proxy never dials a CNAME target the policy refuses', async (t) => {
  const { startProxy } = await import('../sni/harness.js')
  const { buildClientHello } = await import('../helpers/client-hello-builder.js')
  const net = await import('node:net')
  const before = up.queries.filter((q) => q.name.toLowerCase() === 'tracker.blocked.example').length
  const p = await startProxy({ allow: ['*.allowed.example'], resolver: s.svc.resolver })
  t.teardown(() => p.stop())
  for (const name of ['cnameout.allowed.example', 'cnameonly-out.allowed.example', 'cnameout.allowed.example']) {
    const sock = net.connect(p.port, '127.0.0.1')
    sock.on('error', () => {})
    sock.write(buildClientHello({ sni: name }))
    await new Promise((r) => sock.on('close', r))
    const line = p.logs.filter((l) => l.name === name).at(-1)
    t.match(line, { verdict: 'blocked', reason: 'cname_blocked', cname: 'tracker.blocked.example' }, `${name}: refused, not dialled`)
  }
  t.equal(await p.metric('egressd_sni_connections_total{verdict="blocked"}'), 3)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="upstream_error"}'), 0)
  t.equal(
    up.queries.filter((q) => q.name.toLowerCase() === 'tracker.blocked.example').length,
    before,
    'the refused target is never resolved by egressd itself',
  )
})
