import t from 'tap'
import { compilePolicy } from '../../src/policy/compile.js'
import { ReferenceMatcher, labelsToWire, toWire } from './reference-matcher.js'
import { ENTRIES, NAME_253, NAME_254, TEXT_VECTORS } from './vectors.js'

const policy = compilePolicy(ENTRIES)
const reference = new ReferenceMatcher(ENTRIES)
const show = (id: number): string | null => (id < 0 ? null : `${policy.rules[id]!.action} ${policy.rules[id]!.pattern}`)
const bytes = (s: string): Uint8Array => Buffer.from(s, 'latin1')

t.test('rule numbering', async (t) => {
  t.equal(policy.size, ENTRIES.length - 2 + 4 + 4) // two entries expand to 4 names each
  t.equal(reference.size, policy.size)
  policy.rules.forEach((r, i) => t.equal(r.id, i))
  const r = policy.rules[1]!
  t.same(JSON.parse(JSON.stringify(r)), {
    id: 1, action: 'allow', pattern: '*.balena-cloud.com', wildcard: true, entry: '*.balena-cloud.com',
    ports: [{ port: 443, proto: 'tcp' }], source: 'vectors:*.balena-cloud.com',
  })
  t.equal(policy.rules[2]!.pattern, '0.resinio.pool.ntp.org')
  t.equal(policy.rules[2]!.entry, '{0..3}.resinio.pool.ntp.org')
  t.equal(policy.rules[10]!.pattern, '*.example.com')
})

t.test('text vectors, reference and compiled', async (t) => {
  for (const [name, want, below] of TEXT_VECTORS) {
    const label = JSON.stringify(name.length > 40 ? name.slice(0, 20) + '…' + name.length : name)
    t.equal(show(reference.match(name)), want, `reference ${label}`)
    const rule = policy.match(name)
    t.equal(rule === null ? null : `${rule.action} ${rule.pattern}`, want, `compiled ${label}`)
    t.equal(reference.hasAllowedBelow(name), below, `reference below ${label}`)
    t.equal(policy.hasAllowedBelow(name), below, `compiled below ${label}`)
  }
})

t.test('wire vectors from the text ones', async (t) => {
  for (const [name, want, below] of TEXT_VECTORS) {
    // Empty labels have no wire form (a 0 length is the root), and non-Latin-1 text is bytes, not chars.
    const bare = name.endsWith('.') ? name.slice(0, -1) : name
    if (bare !== '' && bare.split('.').some((l) => l === '')) continue
    const wire = toWire(name)
    const label = JSON.stringify(name.length > 40 ? name.slice(0, 20) + '…' + name.length : name)
    const expectWire = /[^\x00-\x7f]/.test(name) ? null : want
    t.equal(show(reference.matchWire(wire, 0)), expectWire, `reference wire ${label}`)
    const rule = policy.matchWire(wire, 0)
    t.equal(rule === null ? null : `${rule.action} ${rule.pattern}`, expectWire, `compiled wire ${label}`)
    const verdict = policy.verdictWire(wire, 0)
    t.equal(policy.ruleOf(verdict), rule, `verdict's rule ${label}`)
    t.equal(Math.sign(verdict), rule === null ? 0 : rule.action === 'allow' ? 1 : -1, `verdict's sign ${label}`)
    const expectBelow = /[^\x00-\x7f]/.test(name) ? false : below
    t.equal(reference.hasAllowedBelowWire(wire, 0), expectBelow, `reference wire below ${label}`)
    t.equal(policy.hasAllowedBelowWire(wire, 0), expectBelow, `compiled wire below ${label}`)
  }
})

t.test('hand-made wire names', async (t) => {
  const www = toWire('www.example.com')
  const cases: Array<[string, Uint8Array, number, string | null, boolean]> = [
    ['a dot inside a label', labelsToWire([bytes('a.b'), bytes('example'), bytes('com')]), 0, null, false],
    ['a dot inside the last label', labelsToWire([bytes('www'), bytes('example.com')]), 0, null, false],
    ['a NUL inside a label', labelsToWire([bytes('a\0b'), bytes('example'), bytes('com')]), 0, null, false],
    ['a 0xff byte', labelsToWire([bytes('a\xffb'), bytes('example'), bytes('com')]), 0, null, false],
    ['a space in a parent', labelsToWire([bytes('www'), bytes('exa mple'), bytes('com')]), 0, null, false],
    ['a compression pointer', Uint8Array.from([3, 0x77, 0x77, 0x77, 0xc0, 0x0c]), 0, null, false],
    ['a pointer as the whole name', Uint8Array.from([0xc0, 0x0c]), 0, null, false],
    ['an extended label type 0x40', Uint8Array.from([0x40, ...new Uint8Array(64), 0]), 0, null, false],
    ['a label past the buffer', www.subarray(0, 10), 0, null, false],
    ['no root byte', www.subarray(0, www.length - 1), 0, null, false],
    ['offset past the buffer', www, www.length, null, false],
    ['negative offset', www, -1, null, false],
    ['fractional offset', www, 0.5, null, false],
    ['the root', Uint8Array.from([0]), 0, null, true],
    ['inside a DNS message', Uint8Array.from([...new Uint8Array(12).fill(0xab), ...www, 0, 1, 0, 1]), 12, 'allow *.example.com', true],
    ['uppercase bytes', toWire('API.Example.COM'), 0, 'allow api.example.com', true],
    // Children of an allowed name under *.example.com are allowed too (RFC 8020: NODATA,
    // not NXDOMAIN), unless the name has no room left for a child label.
    ['a name of 255 wire bytes', toWire(NAME_253), 0, 'allow *.example.com', false],
    ['a name of 256 wire bytes', toWire(NAME_254), 0, null, false],
    ['the apex under a wildcard', toWire('balena-cloud.com'), 0, null, true],
  ]
  for (const [what, buf, offset, want, below] of cases) {
    t.equal(show(reference.matchWire(buf, offset)), want, `reference ${what}`)
    const rule = policy.matchWire(buf, offset)
    t.equal(rule === null ? null : `${rule.action} ${rule.pattern}`, want, `compiled ${what}`)
    t.equal(reference.hasAllowedBelowWire(buf, offset), below, `reference below ${what}`)
    t.equal(policy.hasAllowedBelowWire(buf, offset), below, `compiled below ${what}`)
  }
})

t.test('a lookup returns the same object every time', async (t) => {
  t.equal(policy.match('www.example.com'), policy.match('www.example.com'))
  t.equal(policy.match('www.example.com'), policy.matchWire(toWire('www.example.com'), 0))
})

t.test('an empty policy matches nothing', async (t) => {
  const empty = compilePolicy([])
  t.equal(empty.size, 0)
  t.equal(empty.match('example.com'), null)
  t.equal(empty.matchWire(toWire('example.com'), 0), null)
  t.equal(empty.hasAllowedBelow('.'), false)
  t.equal(empty.hasAllowedBelowWire(Uint8Array.from([0]), 0), false)
})
