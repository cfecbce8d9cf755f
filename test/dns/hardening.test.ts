/**
 * Issue 17: the DNS side under attack. DnsService in-process against a dns2 fake
 * upstream on loopback, driven by raw sockets and dig/kdig.
 */
import t from 'tap'
import dnsPacket from 'dns-packet'
import {
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
