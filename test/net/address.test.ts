import t from 'tap'
import { isIP } from 'node:net'
import { formatIp, ipFamily, isLoopbackIp, isV4Mapped, parseIp, parseIpInto, peerAddress, v4ToUint32 } from '../../src/net/address.js'

t.test('formatIp: RFC 5952 text', async (t) => {
  // Moved from test/dns/wire.test.ts ("qnameText and formatIp").
  const v6 = Buffer.from('20010db8000000000001000000000001', 'hex')
  t.equal(formatIp(v6, 0, 16), '2001:db8::1:0:0:1')
  t.equal(formatIp(Buffer.alloc(16), 0, 16), '::')
  t.equal(formatIp(Buffer.from('00010002000300040005000600070008', 'hex'), 0, 16), '1:2:3:4:5:6:7:8')
  // RFC 5952 §4.2.2: a single zero group is not shortened; §4.2.3: of equal runs, the first.
  t.equal(formatIp(parseIp('2001:db8:0:1:1:1:1:1')!, 0, 16), '2001:db8:0:1:1:1:1:1')
  t.equal(formatIp(parseIp('2001:0:0:1:0:0:0:1')!, 0, 16), '2001:0:0:1::1')
  t.equal(formatIp(parseIp('2001:db8:0:0:1:0:0:1')!, 0, 16), '2001:db8::1:0:0:1')
  t.equal(formatIp(parseIp('2001:DB8::ABCD')!, 0, 16), '2001:db8::abcd', 'lowercase')
  t.equal(formatIp(Uint8Array.of(9, 192, 0, 2, 1, 7), 2, 4), '0.2.1.7', 'offset')
})

t.test('parseIp: bytes in network order, IPv4-mapped and embedded forms', async (t) => {
  // Moved from test/config/load.test.ts ("CIDR membership, IPv4-mapped sources count as IPv4").
  t.same(Array.from(parseIp('::ffff:1.2.3.4')!), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4])
  t.same(Array.from(parseIp('2001:db8::1')!), [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
  t.same(Array.from(parseIp('192.0.2.1')!), [192, 0, 2, 1])
  t.same(Array.from(parseIp('64:ff9b::10.0.0.1')!), [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1])
  t.same(Array.from(parseIp('fe80::1%eth0')!), [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 'zone ignored')
  t.equal(parseIp('example.com'), null)
  t.equal(parseIp('fe80::1%'), null, 'empty zone, as node:net')
  t.equal(parseIp('fe80::1%a_b'), null, 'zone outside [0-9A-Za-z.:-], as node:net')
  const a = parseIp('::ffff:10.1.2.3')!
  t.ok(isV4Mapped(a))
  t.equal(v4ToUint32(a, 12), 0x0a010203)
  t.notOk(isV4Mapped(parseIp('::10.1.2.3')!), 'IPv4-compatible is not mapped')
  t.notOk(isV4Mapped(parseIp('1::ffff:10.1.2.3')!))
  t.equal(ipFamily('10.0.0.1'), 4)
  t.equal(ipFamily('::1'), 6)
  t.equal(ipFamily('10.0.0.1%1'), 0)
})

/**
 * Strings near the address grammar: valid addresses written in every form (full, with a
 * :: at any place, an embedded dotted quad, a zone, upper case), then some mutated by
 * inserting, deleting or replacing characters the grammar cares about.
 */
function nearAddress(fc: typeof import('fast-check').default) {
  const octet = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 300 }))
  const v4 = fc.tuple(octet, octet, octet, octet).map((q) => q.join('.'))
  const hex = fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })).map((g) => g.toString(16))
  const v6 = fc
    .record({
      groups: fc.array(hex, { minLength: 8, maxLength: 8 }),
      gapAt: fc.integer({ min: -1, max: 8 }),
      gapLen: fc.integer({ min: 0, max: 8 }),
      tail: fc.option(v4),
      zone: fc.constantFrom('', '', '%eth0', '%', '%1', '%a_b', '%a.b:c-d', '% '),
      upper: fc.boolean(),
    })
    .map(({ groups, gapAt, gapLen, tail, zone, upper }) => {
      let g = tail === null ? groups : groups.slice(0, 6)
      let text: string
      if (gapAt < 0 || gapAt > g.length) text = g.join(':')
      else {
        const end = Math.min(g.length, gapAt + gapLen)
        text = g.slice(0, gapAt).join(':') + '::' + g.slice(end).join(':')
      }
      if (tail !== null) text += (text.endsWith(':') ? '' : ':') + tail
      return (upper ? text.toUpperCase() : text) + zone
    })
  const edit = fc.tuple(fc.nat(60), fc.constantFrom('ins', 'del', 'set'), fc.constantFrom(...'0123456789abcdefABCDEFg:.%_ '))
  const mutate = (s: string, edits: [number, string, string][]) => {
    for (const [at, op, c] of edits) {
      const i = at % (s.length + 1)
      s = op === 'ins' ? s.slice(0, i) + c + s.slice(i) : op === 'del' ? s.slice(0, i) + s.slice(i + 1) : s.slice(0, i) + c + s.slice(i + 1)
    }
    return s
  }
  return fc.tuple(fc.oneof(v4, v6, v6), fc.array(edit, { maxLength: 2 })).map(([s, edits]) => mutate(s, edits))
}

t.test('peerAddress: mapped IPv4 unwrapped, every other address canonical, garbage null', async (t) => {
  t.same(peerAddress('192.168.77.2'), { family: 4, text: '192.168.77.2' })
  t.same(peerAddress('::ffff:192.168.77.2'), { family: 4, text: '192.168.77.2' })
  t.same(peerAddress('::FFFF:c0a8:4d02'), { family: 4, text: '192.168.77.2' }, 'the hex spelling of a mapped address too')
  t.same(peerAddress('FD77:0:0:0:0:0:0:2'), { family: 6, text: 'fd77::2' })
  t.same(peerAddress('fe80::1%lan0'), { family: 6, text: 'fe80::1' })
  t.same(peerAddress('::192.168.77.2'), { family: 6, text: '::c0a8:4d02' }, 'IPv4-compatible is not mapped: stays IPv6')
  for (const bad of ['', 'lan0', '192.168.77', '1.2.3.4.5', '::ffff:1.2.3', 'localhost']) t.equal(peerAddress(bad), null, bad)
})

t.test('isLoopbackIp: 127/8, ::1 and mapped 127/8 only', async (t) => {
  for (const a of ['127.0.0.1', '127.8.9.10', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::ffff:7f00:2']) t.ok(isLoopbackIp(a), a)
  for (const a of ['128.0.0.1', '127.999.0.1', '127.0.0.1.evil', '::2', '::', '::127.0.0.1', 'fe80::1', 'localhost', '']) t.notOk(isLoopbackIp(a), a)
})

t.test('property: the parser accepts exactly what node:net isIP accepts', async (t) => {
  const fc = (await import('fast-check')).default
  const seed = 5952
  t.comment(`fast-check seed ${seed}`)
  const out = new Uint8Array(16)
  let v4 = 0
  let v6 = 0
  let bad = 0
  fc.assert(
    fc.property(fc.oneof(nearAddress(fc), fc.string({ maxLength: 40 })), (text) => {
      const n = parseIpInto(text, out)
      const family = isIP(text)
      if (family === 4) v4++
      else if (family === 6) v6++
      else bad++
      return (n === 0 ? 0 : n === 4 ? 4 : 6) === family
    }),
    { seed, numRuns: 20000 },
  )
  t.ok(v4 > 500 && v6 > 500 && bad > 500, `all three outcomes exercised (${v4} v4, ${v6} v6, ${bad} not)`)
})

t.test('property: formatIp agrees with the WHATWG URL serializer and parses back', async (t) => {
  const fc = (await import('fast-check')).default
  const seed = 5953
  t.comment(`fast-check seed ${seed}`)
  // Zero-heavy groups, so that :: placement (longest run, first of equal ones) is exercised.
  const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }))
  fc.assert(
    fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
      const bytes = new Uint8Array(16)
      groups.forEach((g, i) => ((bytes[2 * i] = g >> 8), (bytes[2 * i + 1] = g & 0xff)))
      const text = formatIp(bytes, 0, 16)
      const url = new URL(`http://[${text}]/`).hostname
      return url === `[${text}]` && Buffer.from(parseIp(text)!).equals(bytes)
    }),
    { seed, numRuns: 5000 },
  )
})
