import t from 'tap'
import { expandPattern, PatternError } from '../../src/policy/pattern.js'
import { compilePolicy, findWarnings } from '../../src/policy/compile.js'
import { EgressdError } from '../../src/errors.js'
import { DEFAULT_PORTS, type PolicyEntry } from '../../src/policy/types.js'

t.test('normalization', async (t) => {
  t.same(expandPattern('*.Example.com.'), { wildcard: true, names: ['example.com'] })
  t.same(expandPattern('API.example.COM'), { wildcard: false, names: ['api.example.com'] })
  t.same(expandPattern('bücher.example'), { wildcard: false, names: ['xn--bcher-kva.example'] })
  t.same(expandPattern('BÜCHER.example'), { wildcard: false, names: ['xn--bcher-kva.example'] })
  t.same(expandPattern('*.例え.jp'), { wildcard: true, names: ['xn--r8jz45g.jp'] })
  t.same(expandPattern('-a_b-.x--y.test'), { wildcard: false, names: ['-a_b-.x--y.test'] })
  // WHATWG host parsing would read a digits-only last label as IPv4 (`0.0.0.123`).
  t.same(expandPattern('１２３.com'), { wildcard: false, names: ['123.com'] })
  const l63 = 'a'.repeat(63)
  t.same(expandPattern(`${l63}.com`).names, [`${l63}.com`])
  const n253 = `${l63}.${l63}.${l63}.${'b'.repeat(61)}`
  t.equal(n253.length, 253)
  t.same(expandPattern(n253).names, [n253])
  t.same(expandPattern(n253 + '.').names, [n253])
})

t.test('brace expansion', async (t) => {
  t.same(expandPattern('{0..3}.resinio.pool.ntp.org').names, ['0', '1', '2', '3'].map((n) => `${n}.resinio.pool.ntp.org`))
  t.same(expandPattern('time{1,2,3,4}.google.com').names, [1, 2, 3, 4].map((n) => `time${n}.google.com`))
  t.same(expandPattern('{a,b}{1..2}.{x,Y}.test').names, ['a1.x.test', 'a1.y.test', 'a2.x.test', 'a2.y.test', 'b1.x.test', 'b1.y.test', 'b2.x.test', 'b2.y.test'])
  t.same(expandPattern('*.{eu,us}.example.com'), { wildcard: true, names: ['eu.example.com', 'us.example.com'] })
  t.same(expandPattern('{7..7}.x').names, ['7.x'])
  t.same(expandPattern('{08..10}.x').names, ['08.x', '09.x', '10.x'])
  t.same(expandPattern('{a.b,c}.x').names, ['a.b.x', 'c.x'])
  t.same(expandPattern('{a,a}.x').names, ['a.x', 'a.x'], 'duplicates are kept for findWarnings')
  t.equal(expandPattern('{0..99}.{0..99}.x').names.length, 10_000)
  t.equal(expandPattern('{1..10000}.x').names.length, 10_000)
})

/** [pattern, offset, message fragment, hint fragment or null] */
const REJECTED: ReadonlyArray<readonly [string, number, RegExp, RegExp | null]> = [
  ['', 0, /empty name/, null],
  ['.', 0, /empty name/, null],
  ['*', 0, /lone "\*"/, /\*\.example\.com/],
  ['*.', 0, /lone "\*"/, /\*\.example\.com/],
  ['a*.b.c', 1, /whole leftmost label/, /did you mean \*\.b\.c\?/],
  ['a.*.c', 2, /whole leftmost label/, /did you mean \*\.c\?/],
  ['*example.com', 0, /whole leftmost label/, /did you mean \*\.example\.com\?/],
  ['*.*.example.com', 2, /whole leftmost label/, /did you mean \*\.example\.com\?/],
  ['{*,a}.example.com', 1, /whole leftmost label/, /\*\.example\.com/],
  ['.example.com', 0, /empty label/, /write \*\.example\.com/],
  ['example..com', 8, /empty label/, /extra "\."/],
  ['example.com..', 11, /empty label/, /extra "\."/],
  ['*..example.com', 2, /empty label/, null],
  ['{a,b}..x', 6, /empty label/, null],
  ['{a,{b}}.c', 3, /nested braces/, null],
  ['{a.c', 0, /unclosed "\{"/, null],
  ['x.{a,b', 2, /unclosed "\{"/, null],
  ['a}.c', 1, /unmatched "\}"/, null],
  ['{}.c', 0, /empty braces/, null],
  ['{a,,b}.c', 3, /empty item/, null],
  ['{a,}.c', 3, /empty item/, null],
  ['{3..1}.x', 1, /goes downward/, /\{1\.\.3\}/],
  ['{a..c}.x', 1, /not a range/, /whole numbers/],
  ['{-1..3}.x', 1, /not a range/, /whole numbers/],
  ['{1.5..3}.x', 1, /not a range/, null],
  ['{0..10000}.x', 0, /expands to 10001 names, at most 10000/, /split/],
  ['w.{0..100}.{0..99}.x', 2, /expands to 10100 names, at most 10000/, null],
  ['a b.c', 1, /invalid character " "/, /no spaces/],
  [' a.c', 0, /invalid character " "/, /no spaces/],
  ['a.c:443', 3, /invalid character ":"/, /ports/],
  ['https://x.com/', 5, /invalid character ":"/, /not a URL/],
  ['x.com/path', 5, /invalid character "\/"/, /not a URL/],
  ['a!.c', 1, /invalid character "!"/, /letters, digits/],
  ['ok.{x,y!}.c', 7, /invalid character "!"/, null],
  ['{1..3}x!.c', 7, /invalid character "!"/, null],
  [`${'x'.repeat(64)}.com`, 0, /label is 64 bytes long, at most 63/, null],
  [`a.${'x'.repeat(64)}`, 2, /label is 64 bytes long/, null],
  [`${'ü'.repeat(60)}.com`, 0, /after punycode conversion/, null],
  [`${'a'.repeat(63)}.${'a'.repeat(63)}.${'a'.repeat(63)}.${'b'.repeat(62)}`, 0, /name is 254 bytes long, at most 253/, null],
  ['a\u00adb\u200d.c', 1, /cannot convert/, null],
  ['a.\u3002.c', 2, /cannot convert/, null],
]

t.test('rejections carry an offset and a hint', async (t) => {
  for (const [text, offset, message, hint] of REJECTED) {
    try {
      expandPattern(text)
      t.fail(`accepted ${JSON.stringify(text)}`)
    } catch (e) {
      if (!(e instanceof PatternError)) throw e
      t.ok(e instanceof EgressdError)
      t.equal(e.code, 'EPATTERN')
      t.match(e.message, message, `message of ${JSON.stringify(text)}: ${e.message}`)
      t.equal(e.offset, offset, `offset of ${JSON.stringify(text)}: ${e.message}`)
      if (hint !== null) t.match(e.hint ?? '', hint, `hint of ${JSON.stringify(text)}`)
    }
  }
})

const entry = (action: 'allow' | 'deny', text: string, source: string, ports = DEFAULT_PORTS): PolicyEntry => ({ action, entry: text, ports, source })

t.test('compilePolicy names the failing entry', async (t) => {
  const entries = [entry('allow', 'ok.example.com', 'f:1:1'), entry('deny', 'a.*.c', 'f:2:1')]
  const err = t.throws(() => compilePolicy(entries)) as PatternError
  t.ok(err instanceof PatternError)
  t.equal(err.entryIndex, 1)
  t.equal(err.offset, 2)
  t.match(err.hint, /\*\.c/)
})

t.test('warnings: duplicates and shadowed names', async (t) => {
  const udp123 = [{ port: 123, proto: 'udp' as const }]
  const entries = [
    entry('allow', '*.example.com', 'f:1'),
    entry('allow', 'api.example.com', 'f:2'), // shadowed by 0
    entry('allow', 'API.Example.com.', 'f:3'), // duplicate of 1 and shadowed by 0
    entry('allow', 'ntp.example.com', 'f:4', udp123), // other ports: not shadowed
    entry('allow', '*.eu.example.com', 'f:5'), // a narrower wildcard: shadowed by 0
    entry('deny', '*.evil.net', 'f:6'),
    entry('deny', '{a,b}.evil.net', 'f:7'), // shadowed by 5, two names
    entry('allow', 'a.evil.net', 'f:8'), // different action: not shadowed by the deny
    entry('allow', '{x,x}.other.org', 'f:9'), // duplicate inside one entry
    entry('allow', 'example.com', 'f:10'), // the apex is not under *.example.com
    entry('allow', '*.example.com', 'f:11'), // duplicate of 0
    entry('allow', 'bad..name', 'f:12'), // skipped: compilePolicy reports it
  ]
  const w = findWarnings(entries)
  t.same(
    w.map((x) => [x.entryIndex, x.kind]),
    [[1, 'shadowed'], [2, 'duplicate'], [2, 'shadowed'], [4, 'shadowed'], [6, 'shadowed'], [8, 'duplicate'], [10, 'duplicate']],
  )
  t.match(w[0]!.message, /"api\.example\.com" already is allowed by "\*\.example\.com" at f:1/)
  t.match(w[1]!.message, /"api\.example\.com" duplicates "api\.example\.com" at f:2/)
  t.match(w[4]!.message, /"a\.evil\.net" and 1 more name already are denied by "\*\.evil\.net" at f:6/)
  t.match(w[5]!.message, /"x\.other\.org" appears more than once/)
  t.match(w[6]!.message, /"\*\.example\.com" duplicates "\*\.example\.com" at f:1/)
  t.same(findWarnings([]), [])
})
