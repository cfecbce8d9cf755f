import t from 'tap'
import { covered, overlaps, parseCidr, prefixEqual, type Cidr } from '../../src/net/cidr.js'
import { CidrTable } from '../../src/net/cidr-table.js'

const cidr = (s: string) => parseCidr(s) as Cidr

t.test('CIDR membership, IPv4-mapped sources count as IPv4', async (t) => {
  // Moved from test/config/load.test.ts; it checked the config folder's own matcher
  // (cidrsContain), now the one CidrTable.
  const table = new CidrTable(['10.0.0.0/8', '192.168.1.0/24', 'fc00::/7', '127.0.0.1'].map((c, value) => ({ cidr: cidr(c), value })))
  const inside = (ip: string) => table.lookup(ip) >= 0
  t.ok(inside('10.255.0.1'))
  t.notOk(inside('11.0.0.1'))
  t.ok(inside('192.168.1.77'))
  t.notOk(inside('192.168.2.1'))
  t.ok(inside('fd12:3456::1'))
  t.notOk(inside('fe80::1'))
  t.ok(inside('::ffff:10.1.2.3'))
  t.ok(inside('127.0.0.1'))
  t.notOk(inside('127.0.0.2'))
  t.equal(parseCidr('::/0') && (parseCidr('::/0') as Cidr).bits, 0)
})

t.test('CidrTable: first entry in input order, per family; the last-address memo', async (t) => {
  const table = new CidrTable([
    { cidr: cidr('10.0.0.0/8'), value: 1 },
    { cidr: cidr('10.1.0.0/16'), value: 2 },
    { cidr: cidr('::ffff:10.2.0.0/112'), value: 3 },
    { cidr: cidr('2001:db8::/32'), value: 4 },
    { cidr: cidr('0.0.0.0/0'), value: 5 },
  ])
  t.equal(table.lookup('10.1.2.3'), 1, 'first match, not longest')
  t.equal(table.lookup('10.1.2.3'), 1, 'memoized')
  t.equal(table.lookup('::ffff:10.2.0.1'), 1, 'mapped: judged as IPv4 first')
  t.equal(table.lookup('2001:db8:1::1'), 4)
  t.equal(table.lookup('2001:db9::1'), -1, 'IPv6 is not under 0.0.0.0/0')
  t.equal(table.lookup('192.0.2.1'), 5)
  t.equal(table.lookup('not-an-ip'), -1)
  const v6only = new CidrTable([{ cidr: cidr('::ffff:10.2.0.0/112'), value: 3 }])
  t.equal(v6only.lookup('::ffff:10.2.0.1'), 3, 'mapped: an IPv6 entry still matches when no IPv4 one does')
  t.equal(v6only.lookup('10.2.0.1'), -1, 'a bare IPv4 source is not judged against IPv6 entries')
})

t.test('parseCidr: errors and the did-you-mean for host bits (RFC 5952 text)', async (t) => {
  t.match(parseCidr('10.0.0.1/8'), /has host bits set beyond \/8; did you mean 10\.0\.0\.0\/8\?/)
  t.match(parseCidr('2001:db8:0:0:1::1/64'), /did you mean 2001:db8::\/64\?/)
  t.match(parseCidr('fc00:0:0:1:0:0:0:1/64'), /did you mean fc00:0:0:1::\/64\?/, 'the longest zero run is the one shortened')
  t.match(parseCidr('10.0.0.0/33'), /prefix length "\/33" in "10\.0\.0\.0\/33" is not 0-32/)
  t.match(parseCidr('::/129'), /is not 0-128/)
  t.match(parseCidr('10.0.0.0/x'), /prefix length/)
  t.match(parseCidr('example.com/8'), /is not an address or CIDR/)
  t.same(parseCidr('192.0.2.7'), { text: '192.0.2.7', family: 4, bytes: Uint8Array.of(192, 0, 2, 7), bits: 32 })
  t.equal((parseCidr('fe80::1') as Cidr).bits, 128)
})

t.test('prefixEqual and overlaps', async (t) => {
  t.ok(prefixEqual(Uint8Array.of(10, 1, 2, 3), Uint8Array.of(10, 1, 0, 0), 16))
  t.notOk(prefixEqual(Uint8Array.of(10, 1, 2, 3), Uint8Array.of(10, 1, 0, 0), 23))
  t.ok(prefixEqual(Uint8Array.of(10, 1, 2, 3), Uint8Array.of(10, 1, 2, 0), 30))
  t.ok(prefixEqual(Uint8Array.of(1), Uint8Array.of(2), 0), '/0 contains everything')
  t.ok(overlaps(cidr('10.0.0.0/8'), cidr('10.1.0.0/16')))
  t.notOk(overlaps(cidr('10.0.0.0/8'), cidr('11.0.0.0/8')))
  t.notOk(overlaps(cidr('0.0.0.0/0'), cidr('::/0')), 'families never overlap')
})

t.test('covered() against a brute-force reference on small prefixes', async (t) => {
  // Moved from test/groups/config.test.ts; the reference used groupOf (deleted), now a CidrTable.
  // Every /24 under 10.0.0.0/21, covered by random sets of prefixes inside 10.0.0.0/20.
  let seed = 7
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n)
  let yes = 0
  let no = 0
  for (let round = 0; round < 300; round++) {
    const by: Cidr[] = []
    for (let k = rnd(5); k >= 0; k--) {
      const bits = 20 + rnd(5)
      const third = (rnd(16) << (24 - bits)) & 0x0f & (0xff << (24 - bits))
      by.push(cidr(`10.0.${third}.0/${bits}`))
    }
    const bits = 21 + rnd(4)
    const c = cidr(`10.0.${(rnd(8) << (24 - bits)) & 0x07 & (0xff << (24 - bits))}.0/${bits}`)
    const size = 2 ** (24 - bits)
    const table = new CidrTable(by.map((b) => ({ cidr: b, value: 0 })))
    let all = true
    for (let i = 0; i < size; i++) {
      if (table.lookup(`10.0.${c.bytes[2]! + i}.0`) < 0) all = false
    }
    t.equal(covered(c, by), all, `${c.text} by ${by.map((b) => b.text).join(',')}`)
    if (all) yes++
    else no++
  }
  t.ok(yes > 20 && no > 20, `both outcomes exercised (${yes} covered, ${no} not)`)
})
