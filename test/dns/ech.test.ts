/**
 * `dns.ech` through the DNS service: HTTPS/SVCB answers from a real nsd on loopback
 * (its own compression: the authority NS and the additional A point past the records the
 * strip shortens), read by dig and kdig, every param but `ech` byte-identical to what
 * nsd sent; the cache keeps the stripped copy; DNSSEC (RRSIG over the rewritten set
 * removed) and hostile SvcParams through a fake upstream.
 */
import t, { type Test } from 'tap'
import dnsPacket from 'dns-packet'
import { compileConfig } from '../../src/daemon/compiled-config.js'
import { allow, decode, dig, fakeUpstream, hasTool, makeConfig, metric, query, startService, udpExchange, type DnsOverrides } from './helpers.js'
import { startNsd } from './nsd.js'
import { alpn, build, ECH_CONFIG, KEY, name, params, svcb, u16, type RR } from './svcb-wire.js'

const noNsd = (await hasTool('nsd')) ? false : 'nsd not installed'
const noDig = (await hasTool('dig')) ? false : 'dig not installed'
const noKdig = (await hasTool('kdig')) ? false : 'kdig not installed'

const ECH = ECH_CONFIG.toString('base64')
const ZONE = `$ORIGIN ech.test.
$TTL 300
@        SOA   ns hostmaster 1 3600 600 86400 60
@        NS    ns
ns       A     93.184.216.35
svc      A     93.184.216.34
www      HTTPS 1 svc.ech.test. mandatory=alpn,port alpn=h2,h3 port=8443 ipv4hint=93.184.216.34 ech=${ECH} ipv6hint=2606:2800:220:1::1 key65000=abc
www      HTTPS 2 . alpn=h2 ech=${ECH}
www      HTTPS 3 alt.ech.test. alpn=h3 no-default-alpn key65001=x
noech    HTTPS 1 . alpn=h2 ipv4hint=93.184.216.34
onlyech  HTTPS 1 only.ech.test. mandatory=ech ech=${ECH}
onlyech  HTTPS 2 . alpn=h2
_8443._foo.api SVCB 1 svc.ech.test. alpn=foo port=8443 ech=${ECH}
`

interface Svc {
  priority: number
  target: string
  params: [number, string][]
}

/** The HTTPS/SVCB records of a message as (priority, target, [key, value hex]): how the test compares params byte for byte. */
function svcRecords(msg: Buffer): Svc[] {
  const out: Svc[] = []
  for (const a of decode(msg).answers ?? []) {
    if (a.type !== ('UNKNOWN_65' as never) && a.type !== ('UNKNOWN_64' as never)) continue
    const d = (a as unknown as { data: Buffer }).data
    let p = 2
    const labels: string[] = []
    while (d[p]! !== 0) {
      labels.push(d.subarray(p + 1, p + 1 + d[p]!).toString())
      p += 1 + d[p]!
    }
    p++
    const params: [number, string][] = []
    while (p < d.length) {
      const len = d.readUInt16BE(p + 2)
      params.push([d.readUInt16BE(p), d.subarray(p + 4, p + 4 + len).toString('hex')])
      p += 4 + len
    }
    out.push({ priority: d.readUInt16BE(0), target: labels.join('.'), params })
  }
  return out.sort((x, y) => x.priority - y.priority)
}

const rcode = (m: Buffer) => (decode(m) as unknown as { rcode: string }).rcode
const withoutEch = (recs: Svc[]) => recs.map((r) => ({ ...r, params: r.params.filter(([k]) => k !== KEY.ech) }))

async function withNsd(t: Test, dns: DnsOverrides = {}) {
  const nsd = await startNsd('ech.test', ZONE)
  t.teardown(() => nsd.close())
  const s = await startService(makeConfig({ upstreams: [nsd.hostPort], ...dns }, allow('ech.test', '*.ech.test')))
  t.teardown(() => s.close())
  return { nsd, s }
}

t.test('strip: HTTPS answers from nsd lose ech and nothing else', { skip: noNsd }, async (t) => {
  const { nsd, s } = await withNsd(t)
  const direct = (await udpExchange(nsd.port, query('www.ech.test', 'UNKNOWN_65', { edns: true })))!
  const via = (await udpExchange(s.port, query('www.ech.test', 'UNKNOWN_65', { edns: true })))!
  const before = svcRecords(direct)
  t.equal(before.filter((r) => r.params.some(([k]) => k === KEY.ech)).length, 2, 'nsd sent ech in two records')
  t.same(svcRecords(via), withoutEch(before), 'every other param byte-identical, in order')
  const d = decode(via)
  t.equal(rcode(via), 'NOERROR')
  // nsd compresses the NS target and the additional owner against names after the HTTPS
  // records: they still read right.
  t.same(d.authorities?.map((a) => [a.name, a.type, (a as { data?: unknown }).data]), [['ech.test', 'NS', 'ns.ech.test']])
  t.same(d.additionals?.filter((a) => a.type === 'A').map((a) => [a.name, (a as { data?: unknown }).data]), [['ns.ech.test', '93.184.216.35']])
  t.equal(direct.length - via.length, 2 * (4 + ECH_CONFIG.length), 'exactly the two ech params are gone')
  t.equal(await metric(s.registry, 'egressd_dns_ech_stripped_total', 'what="param"'), 2)

  // A second query is a cache hit on the stripped copy, not counted again.
  const hit = (await udpExchange(s.port, query('www.ech.test', 'UNKNOWN_65', { id: 9 })))!
  t.same(svcRecords(hit), withoutEch(before))
  t.equal(await metric(s.registry, 'egressd_dns_cache_hits_total'), 1)
  t.equal(await metric(s.registry, 'egressd_dns_ech_stripped_total', 'what="param"'), 2, 'counted once per upstream answer')

  // SVCB too; a record without ech and an answer without ech are untouched.
  const svcbDirect = (await udpExchange(nsd.port, query('_8443._foo.api.ech.test', 'UNKNOWN_64')))!
  const svcbVia = (await udpExchange(s.port, query('_8443._foo.api.ech.test', 'UNKNOWN_64')))!
  t.same(svcRecords(svcbVia), withoutEch(svcRecords(svcbDirect)))
  t.ok(svcRecords(svcbVia).length === 1 && svcRecords(svcbDirect)[0]!.params.some(([k]) => k === KEY.ech))
  const plainDirect = (await udpExchange(nsd.port, query('noech.ech.test', 'UNKNOWN_65', { id: 7 })))!
  const plainVia = (await udpExchange(s.port, query('noech.ech.test', 'UNKNOWN_65', { id: 7 })))!
  t.same(plainVia.subarray(12).toString('hex'), plainDirect.subarray(12).toString('hex'), 'no ech: relayed byte for byte')
})

t.test('strip: a record with mandatory=ech is removed whole', { skip: noNsd }, async (t) => {
  const { nsd, s } = await withNsd(t)
  const direct = svcRecords((await udpExchange(nsd.port, query('onlyech.ech.test', 'UNKNOWN_65')))!)
  t.equal(direct.length, 2)
  const via = (await udpExchange(s.port, query('onlyech.ech.test', 'UNKNOWN_65')))!
  t.same(svcRecords(via), [direct[1]], 'only the record usable without ECH is left')
  t.equal(decode(via).answers?.length, 1)
  t.equal(await metric(s.registry, 'egressd_dns_ech_stripped_total', 'what="record"'), 1)
})

t.test('dig and kdig read the rewritten answers as nsd\'s, ech aside', { skip: noNsd || noDig || noKdig }, async (t) => {
  const { nsd, s } = await withNsd(t)
  // dig prints `ech=<base64>` in the record's text; removing that from nsd's text must give egressd's.
  const rows = (r: { answers: string[][] }) => r.answers.map((a) => [a[0], ...a.slice(2)].join(' ').replace(/ ech=\S+/, ''))
  for (const tool of ['dig', 'kdig'] as const) {
    for (const qname of ['www.ech.test', 'onlyech.ech.test']) {
      const direct = await dig(tool, nsd.port, [qname, 'HTTPS', '+norec'])
      const via = await dig(tool, s.port, [qname, 'HTTPS'])
      t.equal(via.status, 'NOERROR', `${tool} ${qname}`)
      t.notMatch(via.text, /ech=|key5=/, `${tool}: no ech left`)
      t.match(direct.text, /ech=/, `${tool}: nsd sent ech`)
      const expected = rows(direct).filter((row) => !row.includes('mandatory=ech') && !row.includes('mandatory=key5'))
      t.same(rows(via), expected, `${tool} ${qname}: same records, same params`)
      t.same(via.authority.map((a) => [a[0], a[3], a[4]]), direct.authority.map((a) => [a[0], a[3], a[4]]), `${tool}: authority intact`)
    }
    const tcp = await dig(tool, s.port, ['www.ech.test', 'HTTPS', '+tcp'])
    t.equal(tcp.status, 'NOERROR', `${tool} over TCP`)
    t.notMatch(tcp.text, /ech=/)
  }
})

t.test('pass: relayed with ech, as before', { skip: noNsd }, async (t) => {
  const { nsd, s } = await withNsd(t, { ech: 'pass' })
  const direct = (await udpExchange(nsd.port, query('www.ech.test', 'UNKNOWN_65', { id: 5 })))!
  const via = (await udpExchange(s.port, query('www.ech.test', 'UNKNOWN_65', { id: 5 })))!
  t.same(via.subarray(12).toString('hex'), direct.subarray(12).toString('hex'))
  t.equal(await metric(s.registry, 'egressd_dns_ech_stripped_total', 'what="param"'), 0)

  // A reload to strip empties the cache: the next answer is stripped.
  const cfg = makeConfig({ upstreams: [nsd.hostPort], ech: 'strip' }, allow('ech.test', '*.ech.test'))
  s.svc.update(compileConfig(cfg).dns)
  const after = (await udpExchange(s.port, query('www.ech.test', 'UNKNOWN_65', { id: 6 })))!
  t.same(svcRecords(after), withoutEch(svcRecords(direct)))
  t.equal(await metric(s.registry, 'egressd_dns_cache_hits_total'), 0, 'not served from the pass-era cache')
})

/** RRSIG RDATA: covered type, algorithm 13, 2 labels, TTL 300, expiration, inception, tag, signer, 64-byte signature. */
function rrsig(owner: string, covered: number): RR {
  return { name: owner, type: 46, rdata: [u16(covered, 0x0d02), Buffer.from([0, 0, 1, 0x2c, 0x7f, 0, 0, 0, 0x60, 0, 0, 0, 0x12, 0x34]), name('ech.test', false), Buffer.alloc(64, 7)] }
}

t.test('DNSSEC (DO set): the RRSIG over the rewritten HTTPS set is removed, the rest kept', { skip: noDig || noKdig }, async (t) => {
  const up = await fakeUpstream((q) =>
    build({
      id: q.id,
      question: { name: q.name, type: 65 },
      answer: [svcb(q.name, 65, 1, '.', [[KEY.alpn, alpn('h2')], [KEY.ech, ECH_CONFIG]]), rrsig(q.name, 65)],
      authority: [{ name: 'ech.test', type: 2, rdata: [name('ns.ech.test')] }, rrsig('ech.test', 2)],
    }),
  )
  t.teardown(() => up.close())
  const s = await startService(makeConfig({ upstreams: [up.hostPort] }, allow('*.ech.test')))
  t.teardown(() => s.close())
  for (const tool of ['dig', 'kdig'] as const) {
    const r = await dig(tool, s.port, [`${tool}.ech.test`, 'HTTPS', '+dnssec'])
    t.equal(r.status, 'NOERROR', tool)
    t.same(r.answers.map((a) => a[3]), ['HTTPS'], `${tool}: the HTTPS record, no RRSIG over it`)
    t.same(r.authority.map((a) => a[3]), ['NS', 'RRSIG'], `${tool}: the NS set keeps its signature`)
    t.notMatch(r.text, /ech=/)
  }
  t.equal(await metric(s.registry, 'egressd_dns_ech_stripped_total', 'what="rrsig"'), 2)
})

t.test('hostile SvcParams from the upstream: SERVFAIL + EDE 24, counted; pass relays them', async (t) => {
  const tails: Record<string, Buffer> = {
    order: params([[KEY.ech, ECH_CONFIG], [KEY.alpn, alpn('h2')]]),
    dup: params([[KEY.alpn, alpn('h2')], [KEY.alpn, alpn('h3')]]),
    key65535: params([[65535, Buffer.alloc(1)]]),
    length: Buffer.concat([u16(KEY.alpn, 40), alpn('h2')]),
  }
  const up = await fakeUpstream((q) =>
    build({ id: q.id, question: { name: q.name, type: 65 }, answer: [{ name: q.name, type: 65, rdata: [u16(1), name('.', false), tails[q.name.split('.')[0]!]!] }] }),
  )
  t.teardown(() => up.close())
  const strip = await startService(makeConfig({ upstreams: [up.hostPort] }, allow('*.ech.test')))
  t.teardown(() => strip.close())
  for (const label of ['order', 'dup', 'key65535']) {
    const a = (await udpExchange(strip.port, query(`${label}.ech.test`, 'UNKNOWN_65', { edns: true })))!
    const d = dnsPacket.decode(a) as unknown as { rcode: string; additionals: { options?: { code: number; data?: Buffer }[] }[] }
    t.equal(d.rcode, 'SERVFAIL', label)
    const ede = d.additionals[0]?.options?.find((o) => o.code === 15)
    t.equal(ede?.data?.readUInt16BE(0), 24, `${label}: EDE 24 Invalid Data`)
  }
  t.equal(await metric(strip.registry, 'egressd_dns_svcb_malformed_total'), 3)
  // A hit on the cached raw answer is refused again (stateless), and counted.
  t.equal(rcode((await udpExchange(strip.port, query('order.ech.test', 'UNKNOWN_65')))!), 'SERVFAIL')
  t.equal(await metric(strip.registry, 'egressd_dns_svcb_malformed_total'), 4)
  // A length that lies fails the upstream answer check before the strip: malformed upstream.
  t.equal(rcode((await udpExchange(strip.port, query('length.ech.test', 'UNKNOWN_65')))!), 'SERVFAIL')
  t.equal(await metric(strip.registry, 'egressd_dns_upstream_errors_total', 'reason="malformed"'), 1)

  const pass = await startService(makeConfig({ upstreams: [up.hostPort], ech: 'pass' }, allow('*.ech.test')))
  t.teardown(() => pass.close())
  const relayed = (await udpExchange(pass.port, query('order.ech.test', 'UNKNOWN_65')))!
  t.equal(rcode(relayed), 'NOERROR', 'pass relays what the upstream sent (the client ignores a malformed record, RFC 9460 §2.2)')
  t.equal(await metric(pass.registry, 'egressd_dns_svcb_malformed_total'), 0)
})

t.test('queries joining one upstream flight: all stripped, counted once', async (t) => {
  const up = await fakeUpstream(async (q) => {
    await new Promise((r) => setTimeout(r, 150))
    return build({ id: q.id, question: { name: q.name, type: 65 }, answer: [svcb(q.name, 65, 1, '.', [[KEY.alpn, alpn('h2')], [KEY.ech, ECH_CONFIG]])] })
  })
  t.teardown(() => up.close())
  const s = await startService(makeConfig({ upstreams: [up.hostPort] }, allow('*.ech.test')))
  t.teardown(() => s.close())
  const answers = await Promise.all([1, 2, 3].map((id) => udpExchange(s.port, query('joined.ech.test', 'UNKNOWN_65', { id }))))
  t.equal(up.queries.length, 1, 'one upstream exchange')
  for (const a of answers) t.same(svcRecords(a!), [{ priority: 1, target: '', params: [[KEY.alpn, alpn('h2').toString('hex')]] }])
  t.equal(await metric(s.registry, 'egressd_dns_ech_stripped_total', 'what="param"'), 1)
})
