import t from 'tap'
import { hostNameProblem } from '../../src/policy/host-name.js'

t.test('valid host names have no problem', async (t) => {
  for (const ok of ['example.com', 'EXAMPLE.com.', '_dmarc.example.com', 'a-b.c_d.e', 'x'.repeat(63) + '.example', 'localhost']) t.equal(hostNameProblem(ok), null, ok)
})

t.test('each problem is named', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['', /^empty$/],
    ['.', /^empty$/],
    ['a b.example', /contains ' ' \(a space\)/],
    ['.example', /starts with a dot/],
    ['a..example', /empty label/],
    ['x'.repeat(64) + '.example', /is 64 characters long \(at most 63\)/],
    [('a.'.repeat(127) + 'ab'), /256 characters long \(at most 253\)/],
    ['a\tb.example', /control character \(U\+0009\)/],
    ['a/b.example', /contains '\/'/],
    ['bü.example', /not ASCII/],
  ]
  for (const [name, want] of cases) t.match(hostNameProblem(name), want, JSON.stringify(name))
})
