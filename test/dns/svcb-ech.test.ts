/**
 * The `ech` strip core (src/dns/svcb-ech.ts) on hand-built messages: each case is built
 * twice by the same compressing builder, with and without `ech`, and the strip of the
 * first must be exactly the second (pointers moved included). Hostile SvcParams never
 * throw and never give output.
 */
import t, { type Test } from 'tap'
import fc from 'fast-check'
import dnsPacket from 'dns-packet'
import { EchStrip, hasServiceRecord, stripEch, STRIP_MALFORMED, STRIP_REWRITTEN, STRIP_UNCHANGED } from '../../src/dns/svcb-ech.js'
import { readName, scanAnswer, skipName } from '../../src/dns/wire.js'
import { packAnswer } from '../../src/dns/cache.js'
import { alpn, build, ECH_CONFIG, ipv4, ipv6, KEY, name, params, svcb, u16, type Message, type Param, type RR } from './svcb-wire.js'

const HTTPS = 65
const SVCB = 64
const r = new EchStrip()

/** A message with `ech` where `withEch` says, built by `make(withEch)`; the strip must give make(false). */
function roundTrip(t: Test, make: (withEch: boolean) => Message, expect: { params?: number; records?: number; signatures?: number } = {}) {
  const before = build(make(true))
  const after = build(make(false))
  t.equal(stripEch(before, before.length, r), STRIP_REWRITTEN, r.reason)
  t.same(r.out?.toString('hex'), after.toString('hex'), 'byte-identical to the message built without ech')
  t.equal(r.params, expect.params ?? 1)
  t.equal(r.records, expect.records ?? 0)
  t.equal(r.signatures, expect.signatures ?? 0)
  // A full decoder (pointers followed) reads it.
  t.doesNotThrow(() => dnsPacket.decode(r.out!))
  t.not(scanAnswer(r.out!, r.out!.length), null, 'the daemon\'s own answer check accepts it')
  t.equal(stripEch(r.out!, r.out!.length, r), STRIP_UNCHANGED, 'stripping again changes nothing')
}

const ech = (on: boolean): Param[] => (on ? [[KEY.ech, ECH_CONFIG]] : [])

t.test('one HTTPS record: every other param survives byte for byte', async (t) => {
  roundTrip(t, (on) => ({
    question: { name: 'www.ech.test', type: HTTPS },
    answer: [
      svcb('www.ech.test', HTTPS, 1, '.', [
        [KEY.mandatory, u16(KEY.alpn, KEY.port)],
        [KEY.alpn, alpn('h2', 'h3')],
        [KEY.port, u16(8443)],
        [KEY.ipv4hint, ipv4('192.0.2.1', '192.0.2.2')],
        ...ech(on),
        [KEY.ipv6hint, ipv6('2001:db8::1')],
        [65000, Buffer.from('opaque')],
      ]),
    ],
  }))
})

t.test('ech first, ech last, ech the only param', async (t) => {
  for (const [label, list] of [
    ['only', (on: boolean) => ech(on)],
    ['last', (on: boolean) => [[KEY.alpn, alpn('h2')], ...ech(on)] as Param[]],
    ['after ipv4hint, before an unknown key', (on: boolean) => [[KEY.ipv4hint, ipv4('192.0.2.9')], ...ech(on), [7, Buffer.alloc(0)]] as Param[]],
  ] as const) {
    t.test(label, async (t) => roundTrip(t, (on) => ({ question: { name: 'a.test', type: HTTPS }, answer: [svcb('a.test', HTTPS, 1, '.', list(on))] })))
  }
})

t.test('several records, SVCB too, and an alias-mode record untouched', async (t) => {
  roundTrip(
    t,
    (on) => ({
      question: { name: '_8443._foo.api.test', type: SVCB },
      answer: [
        svcb('_8443._foo.api.test', SVCB, 1, 'svc1.api.test', [[KEY.alpn, alpn('foo')], ...ech(on)]),
        svcb('_8443._foo.api.test', SVCB, 2, 'svc2.api.test', [[KEY.port, u16(53)], ...ech(on), [KEY.ipv6hint, ipv6('2001:db8::2')]]),
        svcb('_8443._foo.api.test', SVCB, 3, 'svc3.api.test', [[KEY.alpn, alpn('bar')]]),
      ],
    }),
    { params: 2 },
  )
  roundTrip(t, (on) => ({
    question: { name: 'alias.test', type: HTTPS },
    answer: [svcb('alias.test', HTTPS, 0, 'pool.cdn.test', []), svcb('alias.test', HTTPS, 1, '.', ech(on))],
  }))
})

t.test('compression: later names that point past a shortened record are moved', async (t) => {
  // The NS rdata, the additional owners and the SOA point at names written after the
  // first HTTPS record (the second record's target, the NS target): each must move back
  // by the bytes cut before its target, as nsd's answers need.
  roundTrip(
    t,
    (on) => ({
      question: { name: 'www.ech.test', type: HTTPS },
      answer: [
        svcb('www.ech.test', HTTPS, 1, '.', [[KEY.alpn, alpn('h2')], ...ech(on), [KEY.ipv6hint, ipv6('2001:db8::1')]]),
        svcb('www.ech.test', HTTPS, 2, 'svc.cdn.test', [[KEY.alpn, alpn('h3')], ...ech(on)]),
      ],
      authority: [{ name: 'ech.test', type: 2, rdata: [name('ns1.cdn.test')] }, { name: 'ech.test', type: 6, rdata: [name('ns1.cdn.test'), name('hostmaster.ech.test'), Buffer.alloc(20, 1)] }],
      additional: [
        { name: 'svc.cdn.test', type: 1, rdata: [ipv4('192.0.2.7')] },
        { name: 'svc.cdn.test', type: 28, rdata: [ipv6('2001:db8::7')] },
        { name: 'ns1.cdn.test', type: 1, rdata: [ipv4('192.0.2.53')] },
        { name: 'mx.svc.cdn.test', type: 15, rdata: [u16(10), name('mail.svc.cdn.test')] },
      ],
    }),
    { params: 2 },
  )
})

t.test('mandatory=ech: the record is removed whole (a client without ECH ignores it)', async (t) => {
  roundTrip(
    t,
    (on) => ({
      question: { name: 'm.test', type: HTTPS },
      answer: [
        ...(on ? [svcb('m.test', HTTPS, 1, 'only-ech.cdn.test', [[KEY.mandatory, u16(KEY.ech)], [KEY.alpn, alpn('h2')], ...ech(true)])] : []),
        svcb('m.test', HTTPS, 2, 'plain.cdn.test', [[KEY.alpn, alpn('h2')]]),
      ],
      additional: [{ name: 'plain.cdn.test', type: 1, rdata: [ipv4('192.0.2.8')] }],
    }),
    { params: 0, records: 1 },
  )
})

/** RRSIG RDATA: type covered, algorithm 13, labels, TTL, times, tag, signer (uncompressed), 64-byte signature. */
function rrsig(owner: string, covered: number, signer: string): RR {
  return { name: owner, type: 46, rdata: [u16(covered, 0x0d02), Buffer.from([0, 0, 1, 0x2c, 0x67, 0, 0, 0, 0x66, 0, 0, 0, 0x12, 0x34]), name(signer, false), Buffer.alloc(64, 7)] }
}

t.test('DNSSEC: the RRSIG over a rewritten set goes, others stay', async (t) => {
  roundTrip(
    t,
    (on) => ({
      question: { name: 'www.ech.test', type: HTTPS },
      answer: [
        svcb('www.ech.test', HTTPS, 1, '.', [[KEY.alpn, alpn('h2')], ...ech(on)]),
        ...(on ? [rrsig('www.ech.test', HTTPS, 'ech.test')] : []),
      ],
      authority: [{ name: 'ech.test', type: 2, rdata: [name('ns.ech.test')] }, rrsig('ech.test', 2, 'ech.test')],
    }),
    { signatures: 1 },
  )
  // No ech: the signed answer is not touched.
  const signed = build({ question: { name: 'x.test', type: HTTPS }, answer: [svcb('x.test', HTTPS, 1, '.', [[KEY.alpn, alpn('h2')]]), rrsig('x.test', HTTPS, 'x.test')] })
  t.equal(stripEch(signed, signed.length, r), STRIP_UNCHANGED)
  t.equal(r.out, null)
})

t.test('no HTTPS/SVCB, or none with ech: unchanged, no output', async (t) => {
  const a = build({ question: { name: 'a.test', type: 1 }, answer: [{ name: 'a.test', type: 1, rdata: [ipv4('192.0.2.1')] }] })
  t.equal(stripEch(a, a.length, r), STRIP_UNCHANGED)
  const h = build({ question: { name: 'a.test', type: HTTPS }, answer: [svcb('a.test', HTTPS, 1, '.', [[KEY.alpn, alpn('h2')]])] })
  t.equal(stripEch(h, h.length, r), STRIP_UNCHANGED)
  t.equal(r.out, null)
})

t.test('hasServiceRecord reads the types through the TTL offsets', async (t) => {
  const pack = (m: Message) => {
    const b = build(m)
    return packAnswer(b, scanAnswer(b, b.length)!)
  }
  const a = pack({ question: { name: 'a.test', type: 1 }, answer: [{ name: 'a.test', type: 1, rdata: [ipv4('192.0.2.1')] }] })
  t.notOk(hasServiceRecord(a.wire, a.ttlOffsets))
  const h = pack({ question: { name: 'a.test', type: 1 }, answer: [{ name: 'a.test', type: 1, rdata: [ipv4('192.0.2.1')] }], additional: [svcb('a.test', SVCB, 1, '.', [])] })
  t.ok(hasServiceRecord(h.wire, h.ttlOffsets), 'found in the additional section too')
})

/** A one-record HTTPS answer whose RDATA after priority and target is `tail`, RDLENGTH as written unless given. */
function hostile(tail: Buffer, rdlength?: number): Buffer {
  return build({ question: { name: 'h.test', type: HTTPS }, answer: [{ name: 'h.test', type: HTTPS, rdata: [u16(1), name('.', false), tail], ...(rdlength !== undefined && { rdlength }) }] })
}

t.test('hostile SvcParams: STRIP_MALFORMED with a reason, never output, never a throw', async (t) => {
  const cases: [string, Buffer, string][] = [
    ['value length past the RDATA', hostile(Buffer.concat([u16(KEY.ech, 200), ECH_CONFIG])), 'svcparam_length'],
    ['truncated key/length', hostile(Buffer.concat([params([[KEY.alpn, alpn('h2')]]), Buffer.from([0, 5, 0])])), 'svcparam_truncated'],
    ['keys out of order', hostile(params([[KEY.ech, ECH_CONFIG], [KEY.alpn, alpn('h2')]])), 'svcparam_order'],
    ['duplicate key', hostile(params([[KEY.ech, ECH_CONFIG], [KEY.ech, ECH_CONFIG]])), 'svcparam_order'],
    ['key 65535', hostile(params([[KEY.alpn, alpn('h2')], [65535, Buffer.alloc(2)]])), 'svcparam_key65535'],
    ['odd mandatory', hostile(params([[KEY.mandatory, Buffer.from([0])]])), 'mandatory'],
    ['empty mandatory', hostile(params([[KEY.mandatory, Buffer.alloc(0)]])), 'mandatory'],
    ['RDLENGTH past the message', hostile(params([[KEY.ech, ECH_CONFIG]]), 4000), 'rdlength'],
    // priority 2 + target 1 + alpn 7 = 10: one byte more ends inside the ech key, five more inside its value.
    ['RDLENGTH ends inside a key', hostile(params([[KEY.alpn, alpn('h2')], [KEY.ech, ECH_CONFIG]]), 11), 'svcparam_truncated'],
    ['RDLENGTH ends inside a value', hostile(params([[KEY.alpn, alpn('h2')], [KEY.ech, ECH_CONFIG]]), 15), 'svcparam_length'],
    ['RDLENGTH 2 (no target)', hostile(Buffer.alloc(0), 2), 'svcb_short'],
  ]
  for (const [label, msg, reason] of cases) {
    t.equal(stripEch(msg, msg.length, r), STRIP_MALFORMED, label)
    t.equal(r.reason, reason, label)
    t.equal(r.out, null)
  }
  // Message-level lies.
  const good = hostile(params([[KEY.ech, ECH_CONFIG]]))
  t.equal(stripEch(good, 11, r), STRIP_MALFORMED, 'shorter than a header')
  t.equal(stripEch(good, good.length - 1, r), STRIP_MALFORMED, 'cut by one byte')
  const morerecords = Buffer.from(good)
  morerecords[7] = 2
  t.equal(stripEch(morerecords, morerecords.length, r), STRIP_MALFORMED, 'ANCOUNT larger than the records')
})

t.test('a pointer into the removed bytes: STRIP_MALFORMED, not a wrong name', async (t) => {
  // The additional A's owner points into the ech value (bytes that are a valid name here).
  const value = Buffer.from([3, 0x61, 0x62, 0x63, 0])
  const msg = build({ question: { name: 'p.test', type: HTTPS }, answer: [svcb('p.test', HTTPS, 1, '.', [[KEY.ech, value]])] })
  const at = msg.length - value.length
  const ptr = Buffer.from([0xc0 | (at >> 8), at & 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])
  const whole = Buffer.concat([msg, ptr])
  whole[11] = 1
  t.equal(stripEch(whole, whole.length, r), STRIP_MALFORMED)
  t.equal(r.reason, 'pointer_into_cut')
  // A pointer forward (never valid) in a later record.
  const fwd = Buffer.concat([msg, Buffer.from([0xc0, 0xff]), ptr.subarray(2)])
  fwd[11] = 1
  t.equal(stripEch(fwd, fwd.length, r), STRIP_MALFORMED)
})

/** Every RR's owner (pointers followed) and type, in order; null when a name does not read. */
function owners(m: Buffer): string[] | null {
  const total = m.readUInt16BE(6) + m.readUInt16BE(8) + m.readUInt16BE(10)
  let off = skipName(m, 12, m.length) + 4
  const out: string[] = []
  for (let i = 0; i < total; i++) {
    const n = readName(m, off, m.length)
    off = skipName(m, off, m.length)
    if (n === null || off < 0 || off + 10 > m.length) return null
    out.push(`${n}/${m.readUInt16BE(off)}`)
    off += 10 + m.readUInt16BE(off + 8)
  }
  return out
}

function isSubsequence(sub: string[], full: string[]): boolean {
  let i = 0
  for (const x of full) if (i < sub.length && sub[i] === x) i++
  return i === sub.length
}

t.test('random bytes and mutated answers never throw; any output is a well-formed message', async (t) => {
  const base = build({
    question: { name: 'www.ech.test', type: HTTPS },
    answer: [svcb('www.ech.test', HTTPS, 1, 'svc.ech.test', [[KEY.alpn, alpn('h2')], [KEY.ech, ECH_CONFIG]]), rrsig('www.ech.test', HTTPS, 'ech.test')],
    // The glue's owner points into the NS RDATA, after the cut: the pointer must move.
    authority: [{ name: 'ech.test', type: 2, rdata: [name('ns1.dns.test')] }],
    additional: [{ name: 'svc.ech.test', type: 1, rdata: [ipv4('192.0.2.7')] }, { name: 'ns1.dns.test', type: 1, rdata: [ipv4('192.0.2.53')] }],
  })
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.nat(255)), { maxLength: 6 }), fc.nat(base.length), (muts, cut) => {
      const m = Buffer.from(base)
      for (const [i, v] of muts) m[i] = v
      const len = Math.max(0, base.length - (cut % 8))
      const res = stripEch(m, len, r)
      if (res === STRIP_REWRITTEN) {
        // Whatever was rewritten still parses, names and all, with the daemon's own check,
        // and every record left has the owner name it had (moved pointers read the same).
        if (scanAnswer(m, len) === null) return true
        if (scanAnswer(r.out!, r.out!.length) === null) return false
        const before = owners(m.subarray(0, len))
        const after = owners(r.out!)
        if (before === null || after === null) return false
        if (after.length !== before.length - r.records - r.signatures || !isSubsequence(after, before)) return false
      } else if (r.out !== null) return false
      return true
    }),
    { numRuns: 3000, seed: 14 },
  )
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (bytes) => {
      const b = Buffer.from(bytes)
      const res = stripEch(b, b.length, r)
      return res !== STRIP_REWRITTEN || r.out!.length < b.length
    }),
    { numRuns: 3000, seed: 15 },
  )
})
