/**
 * Issue 17: the DNS side under attack. DnsService in-process against a dns2 fake
 * upstream on loopback, driven by raw sockets and dig/kdig.
 */
import t from 'tap'
import dgram from 'node:dgram'
import dnsPacket from 'dns-packet'
import {
  cidr,
  decode,
  fakeUpstream,
  makeConfig,
  metric,
  query,
  STANDARD_POLICY,
  standardZone,
  startService,
  tcpClient,
  udpExchange,
  type Zone,
} from './helpers.js'

/** 220 TXT records of 240 bytes: an answer of ~60 KB that a UDP client with a 64 KB buffer would be sent whole. */
const HUGE_TXT = 220

const zone: Zone = async (q) => {
  const name = q.name.toLowerCase()
  const rr = (type: string, data: unknown, ttl = 300, owner = q.name) => ({ type, name: owner, ttl, data }) as dnsPacket.Answer
  if (name === 'huge.allowed.example' && q.type === 'TXT') {
    return { answers: Array.from({ length: HUGE_TXT }, (_, i) => rr('TXT', [String(i).padStart(4, '0') + 'x'.repeat(236)], 60)) }
  }
  return standardZone(q)
}

const up = await fakeUpstream(zone)
t.teardown(() => up.close())
const s = await startService(makeConfig({ upstreams: [up.hostPort] }, STANDARD_POLICY))
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

/** The EDE options (code, text) of a reply's OPT. */
function edes(reply: Buffer): { code: number; text: string }[] {
  const opt = decode(reply).additionals!.find((a) => a.type === 'OPT') as unknown as { options?: { code: number; data: Buffer }[] } | undefined
  return (opt?.options ?? []).filter((o) => o.code === 15).map((o) => ({ code: o.data.readUInt16BE(0), text: o.data.subarray(2).toString() }))
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
