/**
 * No plain Error leaves src/: everything thrown is an EgressdError subclass with a
 * catalogued code (src/errors.ts). Built-in error constructors and thrown strings are
 * found by text, comments included (a comment showing one would be rewritten anyway).
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src')
const PLAIN = /\bnew (Error|TypeError|RangeError|SyntaxError|ReferenceError|EvalError|URIError|AggregateError)\(|\bthrow\s+['"`]|\bthrow (Error|TypeError|RangeError)\(/

export function plainErrors(file: string, text: string): string[] {
  return text.split('\n').flatMap((line, i) => (PLAIN.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : []))
}

const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []))

t.test('no plain Error, TypeError, … constructed or string thrown in src/', async (t) => {
  const all = files(SRC)
  t.ok(all.length > 50, `${all.length} source files read`)
  t.same(all.flatMap((path) => plainErrors(relative(SRC, path), readFileSync(path, 'utf8'))), [])
})

t.test('the scan finds what it is meant to find', async (t) => {
  const bad = [
    "throw new Error('x')",
    'if (i === undefined) throw new TypeError(`unknown ${v}`)',
    "return Promise.reject(new RangeError('n'))",
    "throw 'oops'",
    'throw Error("x")',
  ]
  for (const line of bad) t.equal(plainErrors('f.ts', line).length, 1, line)
  const good = ["throw new EgressdError('ERESOLVE', 'm')", 'throw new InvalidArgumentError(`x`)', 'throw err', "new ConfigError('f', 1, 1, 'd')"]
  for (const line of good) t.equal(plainErrors('f.ts', line).length, 0, line)
})
