import t from 'tap'
import dnsPacket from 'dns-packet'
import {
  answerMatches,
  buildAnyReply,
  buildHeaderReply,
  buildReply,
  buildUpstreamQuery,
  EDE_BLOCKED,
  extractChain,
  parseQuery,
  PARSE_DROP,
  PARSE_FORMERR,
  PARSE_NOTIMP,
  PARSE_OK,
  qnameText,
  QueryInfo,
  RCODE_NXDOMAIN,
  RCODE_FORMERR,
  readName,
  readTtls,
  renderAnswer,
  scanAnswer,
  stripOpt,
} from '../../src/dns/wire.js'
import { query, rawHeader } from './helpers.js'

const parse = (b: Buffer) => {
  const info = new QueryInfo()
  return { r: parseQuery(b, b.length, info), info }
}

const header = (flags: number, counts: [number, number, number, number], rest: number[] = []): Buffer => rawHeader(0xbeef, flags, counts, rest)

t.test('parseQuery reads header, question and OPT', async (t) => {
  const { r, info } = parse(query('Example.COM', 'AAAA', { id: 7, dnssec: true, udpSize: 4096 }))
  t.equal(r, PARSE_OK)
  t.equal(info.id, 7)
  t.equal(info.qtype, 28)
  t.equal(info.qclass, 1)
  t.equal(info.questionEnd, 12 + 13 + 4)
  t.ok(info.hasOpt)
  t.ok(info.dnssecOk)
  t.equal(info.udpSize, 1232, 'the client asked 4096: capped at maxUdpSize (1232 by default)')
  const plain = parse(query('a.b', 'A'))
  t.equal(plain.r, PARSE_OK)
  t.notOk(plain.info.hasOpt)
  t.equal(plain.info.udpSize, 512)
  const small = parse(query('a.b', 'A', { edns: true, udpSize: 100 }))
  t.equal(small.info.udpSize, 512, 'sizes below 512 are raised to 512')
})

t.test('parseQuery classifies hostile input', async (t) => {
  const q = [1, 0x61, 0, 0, 1, 0, 1]
  t.equal(parse(Buffer.alloc(11)).r, PARSE_DROP, 'short')
  t.equal(parse(header(0x8000, [1, 0, 0, 0], q)).r, PARSE_DROP, 'QR set')
  t.equal(parse(header(0x1000, [1, 0, 0, 0], q)).r, PARSE_NOTIMP, 'opcode 2')
  t.equal(parse(header(0, [0, 0, 0, 0])).r, PARSE_FORMERR, 'QDCOUNT 0')
  t.equal(parse(header(0, [2, 0, 0, 0], [...q, ...q])).r, PARSE_FORMERR, 'QDCOUNT 2')
  t.equal(parse(header(0, [1, 0, 0, 0], [0xc0, 12, 0, 1, 0, 1])).r, PARSE_FORMERR, 'pointer in question')
  t.equal(parse(header(0, [1, 0, 0, 0], [64, ...Buffer.alloc(64, 0x61), 0, 0, 1, 0, 1])).r, PARSE_FORMERR, 'label 64')
  const long: number[] = []
  for (let i = 0; i < 5; i++) long.push(63, ...Buffer.alloc(63, 0x61))
  t.equal(parse(header(0, [1, 0, 0, 0], [...long, 0, 0, 1, 0, 1])).r, PARSE_FORMERR, 'name > 255')
  t.equal(parse(header(0, [1, 0, 0, 0], [1, 0x61, 0, 0, 1])).r, PARSE_FORMERR, 'truncated question')
  t.equal(parse(header(0, [0xffff, 0xffff, 0xffff, 0xffff])).r, PARSE_FORMERR, 'all counts 0xFFFF')
  t.equal(parse(header(0, [1, 0, 0, 0xffff], q)).r, PARSE_FORMERR, 'ARCOUNT past the data')
  const twoOpt = [...q, 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]
  t.equal(parse(header(0, [1, 0, 0, 2], twoOpt)).r, PARSE_FORMERR, 'two OPT records')
  // The largest legal name: 255 bytes on the wire.
  const max: number[] = []
  for (let i = 0; i < 3; i++) max.push(63, ...Buffer.alloc(63, 0x61))
  max.push(61, ...Buffer.alloc(61, 0x61))
  t.equal(parse(header(0, [1, 0, 0, 0], [...max, 0, 0, 1, 0, 1])).r, PARSE_OK, 'name of exactly 255 bytes')
})

t.test('buildReply echoes the question and adds an OPT with EDE only for EDNS queries', async (t) => {
  const q = query('blocked.example', 'A', { id: 99, dnssec: true })
  const { info } = parse(q)
  const reply = buildReply(q, info, RCODE_NXDOMAIN, EDE_BLOCKED, Buffer.from('why'))
  const d = dnsPacket.decode(reply)
  t.equal(d.id, 99)
  t.equal(d.type, 'response')
  t.equal((d as { rcode?: string }).rcode, 'NXDOMAIN')
  t.same(d.questions, [{ name: 'blocked.example', type: 'A', class: 'IN' }])
  t.equal(d.answers!.length, 0)
  const opt = d.additionals![0] as dnsPacket.OptAnswer
  t.equal(opt.type, 'OPT')
  t.equal(opt.udpPayloadSize, 1232)
  t.equal(opt.flag_do, true)
  t.equal(opt.options[0]!.code, 15, 'EDE option')
  t.same(Buffer.from((opt.options[0] as { data: Buffer }).data), Buffer.from([0, 15, ...Buffer.from('why')]), 'INFO-CODE 15 + EXTRA-TEXT')
  const plainQ = query('blocked.example', 'A')
  const plain = buildReply(plainQ, parse(plainQ).info, RCODE_NXDOMAIN, EDE_BLOCKED, Buffer.from('why'))
  t.equal(plain.length, plainQ.length, 'no OPT without EDNS')
  t.equal(plain.readUInt16BE(10), 0)
})

t.test('header replies and ANY', async (t) => {
  const bad = header(0x1100, [1, 0, 0, 0])
  const r = buildHeaderReply(bad, RCODE_FORMERR)
  t.equal(r.length, 12)
  t.equal(r.readUInt16BE(0), 0xbeef)
  t.equal(r[2]! & 0x80, 0x80, 'QR')
  t.equal((r[2]! >> 3) & 0xf, 2, 'opcode echoed')
  t.equal(r[3]! & 0xf, RCODE_FORMERR)
  const q = query('any.example', 'ANY', { edns: true })
  const any = dnsPacket.decode(buildAnyReply(q, parse(q).info))
  t.equal(any.answers!.length, 1)
  t.equal(any.answers![0]!.type, 'HINFO')
  t.same((any.answers![0] as { data: unknown }).data, { cpu: 'RFC8482', os: '' })
})

/** An upstream-style answer: CNAME chain, A/AAAA, upstream OPT with a cookie. */
function upstreamAnswer(id = 1): Buffer {
  return dnsPacket.encode({
    type: 'response',
    id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: [{ name: 'www.example.com', type: 'A', class: 'IN' }],
    answers: [
      { type: 'CNAME', name: 'www.example.com', ttl: 300, data: 'edge.example.net' },
      { type: 'A', name: 'edge.example.net', ttl: 60, data: '93.184.216.34' },
      { type: 'AAAA', name: 'edge.example.net', ttl: 120, data: '2606:2800:220:1::1' },
      { type: 'A', name: 'unrelated.example.org', ttl: 60, data: '10.0.0.1' },
    ],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: 0, options: [{ code: 10, data: Buffer.alloc(16, 1) }] } as never],
  })
}

t.test('scanAnswer, stripOpt and renderAnswer (OPT rewrite, TTL aging, truncation)', async (t) => {
  const ans = upstreamAnswer()
  const scan = scanAnswer(ans, ans.length)!
  t.ok(scan)
  t.equal(scan.minTtl, 60)
  t.equal(scan.anCount, 4)
  t.equal(scan.optEnd, ans.length, 'OPT is last')
  t.equal(scan.addressOffsets.length, 3)
  const wire = stripOpt(ans, scan)
  t.equal(wire.readUInt16BE(10), 0, 'ARCOUNT-1')
  t.equal(wire.length, scan.optStart)
  const q = query('WWW.example.com', 'A', { id: 0x4242, dnssec: true })
  const info = parse(q).info
  const offs = Uint16Array.from(scan.ttlOffsets)
  const ttls = readTtls(ans, scan.ttlOffsets)
  const out = renderAnswer(wire, offs, ttls, q, info, 100, 1232)
  const d = dnsPacket.decode(out)
  t.equal(d.id, 0x4242)
  t.equal(d.questions![0]!.name, 'WWW.example.com', 'question as the client wrote it')
  t.same(
    d.answers!.map((a) => (a as { ttl?: number }).ttl),
    [200, 0, 20, 0],
    'TTLs aged by 100 s, never below 0',
  )
  const opt = d.additionals![0] as dnsPacket.OptAnswer
  t.equal(opt.udpPayloadSize, 1232)
  t.equal(opt.flag_do, true)
  t.same(opt.options, [], 'no upstream cookie passed on')
  // Bytes of every RR relayed unchanged except TTL fields.
  const aged0 = renderAnswer(wire, offs, ttls, q, info, 0, 1232)
  t.same(aged0.subarray(info.questionEnd, wire.length), ans.subarray(info.questionEnd, wire.length))
  const tc = renderAnswer(wire, offs, ttls, q, info, 0, 60)
  const dt = dnsPacket.decode(tc)
  t.ok(dt.flag_tc, 'TC set when it does not fit')
  t.equal(dt.answers!.length, 0)
  t.equal(dt.questions!.length, 1)
  t.equal(dt.additionals!.length, 1, 'OPT kept in the TC answer')
})

t.test('stripOpt cuts RRs that follow a mid-section OPT', async (t) => {
  const ans = dnsPacket.encode({
    type: 'response',
    id: 1,
    questions: [{ name: 'a.example', type: 'A', class: 'IN' }],
    answers: [{ type: 'A', name: 'a.example', ttl: 5, data: '1.2.3.4' }],
    additionals: [
      { type: 'A', name: 'glue.example', ttl: 5, data: '1.1.1.1' },
      { type: 'OPT', name: '.', udpPayloadSize: 4096, flags: 0, options: [] } as never,
      { type: 'A', name: 'after.example', ttl: 5, data: '2.2.2.2' },
    ],
  })
  const scan = scanAnswer(ans, ans.length)!
  const wire = stripOpt(ans, scan)
  const d = dnsPacket.decode(wire)
  t.same(
    d.additionals!.map((a) => a.name),
    ['glue.example'],
  )
  t.equal(scan.ttlOffsets.length, 2)
})

t.test('scanAnswer: negative TTL from SOA, malformed input', async (t) => {
  const nx = dnsPacket.encode({
    type: 'response',
    id: 1,
    flags: 3,
    questions: [{ name: 'nope.example', type: 'A', class: 'IN' }],
    authorities: [{ type: 'SOA', name: 'example', ttl: 900, data: { mname: 'ns.example', rname: 'h.example', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 120 } }],
  })
  const s = scanAnswer(nx, nx.length)!
  t.equal(s.rcode, 3)
  t.equal(s.negativeTtl, 120)
  t.equal(scanAnswer(nx, nx.length - 3), null, 'truncated RR')
  const bogus = Buffer.from(nx)
  bogus.writeUInt16BE(50, 8) // NSCOUNT past the data
  t.equal(scanAnswer(bogus, bogus.length), null)
})

t.test('extractChain follows CNAMEs through compressed names', async (t) => {
  const ans = upstreamAnswer()
  const c = extractChain(ans, ans.length)!
  t.equal(c.target, 'edge.example.net')
  t.same(
    c.addresses.map((a) => [a.address, a.family, a.ttl]),
    [
      ['93.184.216.34', 4, 60],
      ['2606:2800:220:1::1', 6, 120],
    ],
    'unrelated owner ignored',
  )
  // A pointer loop must end, not spin.
  const loop = Buffer.from(ans)
  loop[12] = 0xc0
  loop[13] = 12
  t.equal(readName(loop, 12, loop.length), null)
})

t.test('answerMatches: ID, question (case-insensitive), type', async (t) => {
  const q = query('Case.Example', 'A', { edns: true })
  const info = parse(q).info
  const up = buildUpstreamQuery(q, info, 0x5555)
  const ans = dnsPacket.encode({ type: 'response', id: 0x5555, questions: [{ name: 'cASE.example', type: 'A', class: 'IN' }] })
  t.ok(answerMatches(ans, ans.length, up, info.questionEnd))
  const wrongId = Buffer.from(ans)
  wrongId[1] = 0x56
  t.notOk(answerMatches(wrongId, wrongId.length, up, info.questionEnd))
  const other = dnsPacket.encode({ type: 'response', id: 0x5555, questions: [{ name: 'case.exampla', type: 'A', class: 'IN' }] })
  t.notOk(answerMatches(other, other.length, up, info.questionEnd))
  const aaaa = dnsPacket.encode({ type: 'response', id: 0x5555, questions: [{ name: 'case.example', type: 'AAAA', class: 'IN' }] })
  t.notOk(answerMatches(aaaa, aaaa.length, up, info.questionEnd))
  const notResponse = Buffer.from(ans)
  notResponse[2]! &= 0x7f
  t.notOk(answerMatches(notResponse, notResponse.length, up, info.questionEnd))
  const d = dnsPacket.decode(up)
  t.equal(d.id, 0x5555)
  t.equal((d.additionals![0] as dnsPacket.OptAnswer).udpPayloadSize, 1232)
})

t.test('qnameText', async (t) => {
  const q = query('MiXeD.Example.COM', 'A')
  const info = parse(q).info
  t.equal(qnameText(q, info.qnameEnd, Buffer.alloc(256)), 'mixed.example.com')
  const root = header(0, [1, 0, 0, 0], [0, 0, 1, 0, 1])
  t.equal(qnameText(root, 13, Buffer.alloc(256)), '.')
})

t.test('property: parser, scanner and chain walker never throw on arbitrary or mutated bytes', async (t) => {
  const fc = (await import('fast-check')).default
  const seed = 4242
  t.comment(`fast-check seed ${seed}`)
  const base = upstreamAnswer()
  let formerr = 0
  let ok = 0
  const check = (b: Uint8Array) => {
    const info = new QueryInfo()
    const r = parseQuery(b, b.length, info)
    if (r === PARSE_FORMERR) formerr++
    if (r === PARSE_OK) {
      ok++
      if (info.questionEnd > b.length) throw new Error('questionEnd past the data')
      buildReply(b, info, RCODE_NXDOMAIN, EDE_BLOCKED, null)
    }
    const buf = Buffer.from(b)
    if (b.length >= 12) {
      scanAnswer(buf, buf.length)
      extractChain(buf, buf.length)
    }
    return true
  }
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), check), { seed, numRuns: 3000 })
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.nat(255)), { minLength: 1, maxLength: 6 }), (flips) => {
      const m = Buffer.from(base)
      for (const [i, v] of flips) m[i] = v
      return check(m)
    }),
    { seed, numRuns: 3000 },
  )
  const q = query('mutate.example.com', 'AAAA', { dnssec: true })
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 2, max: q.length - 1 }), fc.nat(255)), { minLength: 1, maxLength: 3 }), (flips) => {
      const m = Buffer.from(q)
      for (const [i, v] of flips) m[i] = v
      return check(m)
    }),
    { seed, numRuns: 3000 },
  )
  t.ok(formerr > 100, `FORMERR path exercised (${formerr})`)
  t.ok(ok > 0, `OK path exercised (${ok})`)
})

t.test('property: parseQuery agrees with dns-packet on valid queries', async (t) => {
  const fc = (await import('fast-check')).default
  const label = fc.stringMatching(/^[a-zA-Z0-9_-]{1,20}$/)
  const types = ['A', 'AAAA', 'TXT', 'MX', 'UNKNOWN_65', 'CNAME'] as const
  const codes: Record<string, number> = { A: 1, AAAA: 28, TXT: 16, MX: 15, UNKNOWN_65: 65, CNAME: 5 }
  let withOpt = 0
  fc.assert(
    fc.property(fc.array(label, { minLength: 1, maxLength: 6 }), fc.constantFrom(...types), fc.boolean(), fc.boolean(), (labels, type, edns, dnssec) => {
      const name = labels.join('.')
      const q = query(name, type, { edns, dnssec })
      const info = new QueryInfo()
      if (parseQuery(q, q.length, info) !== PARSE_OK) return false
      if (info.qtype !== codes[type] || info.hasOpt !== (edns || dnssec) || info.dnssecOk !== dnssec) return false
      if (info.hasOpt) withOpt++
      if (qnameText(q, info.qnameEnd, Buffer.alloc(256)) !== name.toLowerCase()) return false
      const d = dnsPacket.decode(buildReply(q, info, RCODE_NXDOMAIN, EDE_BLOCKED, Buffer.from('x')))
      return d.questions![0]!.name === name && d.questions![0]!.type === type && d.additionals!.length === (info.hasOpt ? 1 : 0)
    }),
    { seed: 777, numRuns: 2000 },
  )
  t.ok(withOpt > 500, `EDNS cases exercised (${withOpt})`)
})
