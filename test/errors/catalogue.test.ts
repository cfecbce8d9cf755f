import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  ConfigError,
  ConfigErrors,
  EgressdError,
  ERROR_CODES,
  InvalidArgumentError,
  OverloadError,
  UpstreamTimeoutError,
  type ErrorCode,
} from '../../src/errors.js'
import { PatternError } from '../../src/policy/pattern.js'
import { UpstreamFailure } from '../../src/dns/upstream.js'
import { NftError } from '../../src/firewall/nft-runner.js'
import { StartError } from '../../src/daemon/daemon.js'

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src')
const files = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []))
const SOURCES = files(SRC).map((path) => ({ file: relative(SRC, path), text: readFileSync(path, 'utf8') }))

t.test('codes are unique and shaped E + capitals', async (t) => {
  t.equal(new Set(ERROR_CODES).size, ERROR_CODES.length)
  for (const code of ERROR_CODES) t.match(code, /^E[A-Z]+$/)
})

t.test('each class carries its code, its name, and is an EgressdError', async (t) => {
  const cases: [EgressdError, string, ErrorCode][] = [
    [new EgressdError('ERESOLVE', 'm'), 'EgressdError', 'ERESOLVE'],
    [new ConfigError('f.yaml', 2, 3, 'bad'), 'ConfigError', 'ECONFIG'],
    [new ConfigErrors([new ConfigError('f.yaml', 1, 1, 'a'), new ConfigError('f.yaml', 2, 1, 'b')]), 'ConfigErrors', 'ECONFIG'],
    [new OverloadError('m'), 'OverloadError', 'EOVERLOAD'],
    [new UpstreamTimeoutError('m'), 'UpstreamTimeoutError', 'ETIMEOUT'],
    [new InvalidArgumentError('m'), 'InvalidArgumentError', 'EINVALIDARG'],
    [new PatternError('empty name', 0), 'PatternError', 'EPATTERN'],
    [new UpstreamFailure('timeout', 'm'), 'UpstreamFailure', 'ETIMEOUT'],
    [new UpstreamFailure('servfail', 'm'), 'UpstreamFailure', 'EUPSTREAM'],
    [new NftError('m'), 'NftError', 'ENFT'],
    [new StartError(new Error('EADDRINUSE')), 'StartError', 'ESTART'],
  ]
  for (const [err, name, code] of cases) {
    t.ok(err instanceof EgressdError && err instanceof Error, name)
    t.equal(err.name, name)
    t.equal(err.code, code)
    t.ok(ERROR_CODES.includes(err.code), `${code} is catalogued`)
  }
  t.equal(new ConfigError('f.yaml', 2, 3, 'bad').message, 'f.yaml:2:3: bad')
  t.equal(new ConfigErrors([new ConfigError('f.yaml', 1, 1, 'a'), new ConfigError('f.yaml', 2, 1, 'b')]).message, 'f.yaml:1:1: a\nf.yaml:2:1: b')
  // Callers branch on the class: a timeout is not an overload, and neither is a plain EgressdError with its code.
  t.notOk(new UpstreamTimeoutError('m') instanceof OverloadError)
  t.notOk(new EgressdError('EOVERLOAD', 'm') instanceof OverloadError)
})

t.test('every catalogued code is thrown somewhere in src/ (no dead entries)', async (t) => {
  const catalogue = SOURCES.find((s) => s.file === 'errors.ts')!.text
  const others = SOURCES.filter((s) => s.file !== 'errors.ts')
  // Classes that errors.ts itself defines with a fixed code: using the class uses the code.
  const classesOf = new Map<string, string[]>()
  for (const m of catalogue.matchAll(/class (\w+) extends EgressdError \{[\s\S]*?super\('(E[A-Z]+)'/g)) {
    classesOf.set(m[2]!, [...(classesOf.get(m[2]!) ?? []), m[1]!])
  }
  t.ok(classesOf.get('EOVERLOAD')?.includes('OverloadError'), 'the class scan reads errors.ts')
  for (const code of ERROR_CODES) {
    const used = others.some((s) => s.text.includes(`'${code}'`) || (classesOf.get(code) ?? []).some((c) => s.text.includes(`new ${c}(`)))
    t.ok(used, `${code} is thrown in src/`)
  }
})

t.test('the table in errors.ts lists every code', async (t) => {
  const catalogue = SOURCES.find((s) => s.file === 'errors.ts')!.text
  for (const code of ERROR_CODES) t.match(catalogue, new RegExp(`^ \\* \\| ${code} \\|`, 'm'), code)
})
