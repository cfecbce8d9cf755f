import t from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors } from '../../src/errors.js'
import { camel, type Field, type Schema } from '../../src/config/fields.js'
import { loadConfig, parseConfig } from '../../src/config/load.js'
import { configSchema, groupSchema } from '../../src/config/schema.js'
import type { Config, DnsConfig, LogConfig, SniConfig } from '../../src/config/types.js'
import { formatHostPort, type HostPort } from '../../src/net/host-port.js'
import { formatPort } from '../../src/policy/types.js'
import { BEGIN, defaultText, END, rows, table } from './reference.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-schema-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')
const DOC = 'docs/configuration.md'

// Type-level: the section types are inferred from the schema, literal unions included.
// A wrong inference fails `tsc --noEmit` (part of `npm test`), not this run.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
const inferred: [
  Equal<DnsConfig['blockResponse'], 'nxdomain' | 'refused'>,
  Equal<DnsConfig['cache']['negativeMaxTtl'], number>,
  Equal<DnsConfig['listen'], readonly HostPort[]>,
  Equal<SniConfig['onBlock'], 'reset' | 'alert'>,
  Equal<Config['metrics']['listen'], HostPort | null>,
  Equal<LogConfig['level'], 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'>,
  Equal<keyof SniConfig, 'listen' | 'upstreamPort' | 'onBlock' | 'allowPrivateDestinations' | 'maxClientHelloBytes' |
    'handshakeTimeoutMs' | 'connectTimeoutMs' | 'idleTimeoutMs' | 'maxConnections' | 'shutdownGraceMs'>,
] = [true, true, true, true, true, true, true]
void inferred

/** Every leaf of a schema with its YAML path and its camelCase path into Config. */
function leaves(schema: Schema, yaml: string[] = [], js: string[] = []): { yaml: string; js: string[]; field: Field }[] {
  const out: { yaml: string; js: string[]; field: Field }[] = []
  for (const [key, f] of Object.entries(schema)) {
    if (f.kind === 'section') out.push(...leaves(f.fields, [...yaml, key], [...js, camel(key)]))
    else out.push({ yaml: [...yaml, key].join('.'), js: [...js, camel(key)], field: f })
  }
  return out
}

const get = (o: unknown, path: readonly string[]): unknown => path.reduce((v, k) => (v as Record<string, unknown>)[k], o)

t.test('docs/configuration.md holds the reference table generated from the schema', async (t) => {
  const text = readFileSync(DOC, 'utf8')
  const begin = text.indexOf(BEGIN)
  const end = text.indexOf(END)
  t.ok(begin >= 0 && end > begin, 'the generated block is marked')
  const expected = table(configSchema.fields)
  const actual = text.slice(begin + BEGIN.length, end).trim()
  if (actual !== expected && process.env.UPDATE_DOCS === '1') {
    writeFileSync(DOC, text.slice(0, begin + BEGIN.length) + '\n' + expected + '\n' + text.slice(end))
    t.comment(`${DOC} rewritten`)
    return
  }
  t.equal(actual, expected, `run UPDATE_DOCS=1 npx tap test/config/schema.test.ts to regenerate ${DOC}`)
})

t.test('every key of the schema has a row in the reference with its default', async (t) => {
  const text = readFileSync(DOC, 'utf8')
  const documented = new Map<string, string>()
  for (const m of text.matchAll(/^\| `([a-z_.[\]]+)` \| `([^`]*)` \|/gm)) documented.set(m[1]!, m[2]!.replaceAll('\\|', '|'))
  const all = rows(configSchema.fields)
  t.ok(all.length >= 45, `${all.length} keys`)
  for (const r of all) t.equal(documented.get(r.key), r.default, r.key)
  t.same([...documented.keys()].filter((k) => !all.some((r) => r.key === k)), [], 'no row for a key the schema does not have')
  t.match(readFileSync('README.md', 'utf8'), /docs\/configuration\.md/, 'the README points to the reference')
})

t.test('an empty file yields the schema\'s defaults, key by key', async (t) => {
  const { config } = parseConfig('empty.yaml', '', { resolvConf })
  const show = (f: Field, v: unknown): string => {
    if (f.kind === 'hostports') return `[${(v as HostPort[]).map((h) => `"${formatHostPort(h)}"`).join(', ')}]`
    if (f.kind === 'hostport?') return v === null ? 'null' : `"${formatHostPort(v as HostPort)}"`
    if (f.kind === 'cidrs') return `[${(v as { text: string }[]).map((c) => c.text).join(', ')}]`
    if (f.kind === 'ports') return `[${(v as Parameters<typeof formatPort>[0][]).map(formatPort).join(', ')}]`
    if (f.kind === 'entries' || f.kind === 'presets' || f.kind === 'groups') return `[${(v as unknown[]).join(', ')}]`
    if (f.kind === 'text') return `"${String(v)}"`
    return String(v)
  }
  let n = 0
  for (const leaf of leaves(configSchema.fields)) {
    // The top-level allow/deny/include become Config.policy; upstreams [] means resolv.conf.
    if (leaf.yaml === 'allow' || leaf.yaml === 'deny' || leaf.yaml === 'include' || leaf.yaml === 'dns.upstreams') continue
    // ui.token_file "" (none) reads as null: the status page tells "no token" by null.
    if (leaf.yaml === 'ui.token_file') {
      t.equal(config.ui?.tokenFile, null, leaf.yaml)
      continue
    }
    t.equal(show(leaf.field, get(config, leaf.js)), defaultText(leaf.field), leaf.yaml)
    n++
  }
  t.ok(n >= 35, `${n} defaults compared`)
  t.same(config.dns.upstreams, [{ host: '192.0.2.53', port: 53, family: 4 }], 'upstreams: [] reads resolv.conf')
  t.same(config.includes, [], 'include: [] reads no file')
})

t.test('config/egressd.yaml shows the defaults (presets aside)', async (t) => {
  const shipped = loadConfig('config/egressd.yaml', { resolvConf }).config
  const empty = parseConfig('empty.yaml', '', { resolvConf }).config
  for (const key of ['dns', 'sni', 'metrics', 'firewall', 'log', 'mode', 'report', 'reportPorts', 'groups'] as const) t.same(shipped[key], empty[key], key)
})

t.test('a misspelt key anywhere gets the schema\'s key as did-you-mean', async (t) => {
  const yamlFor = (path: string[], value: string): string => path.map((k, i) => `${'  '.repeat(i)}${k}:`).join('\n') + ` ${value}\n`
  const cases: { path: string[]; key: string }[] = []
  const walk = (schema: Schema, at: string[]) => {
    for (const [key, f] of Object.entries(schema)) {
      cases.push({ path: at, key })
      if (f.kind === 'section') walk(f.fields, [...at, key])
    }
  }
  walk(configSchema.fields, [])
  for (const { path, key } of cases) {
    const typo = key + 'x'
    let message = ''
    try {
      parseConfig('k.yaml', yamlFor([...path, typo], '1'), { resolvConf })
    } catch (e) {
      if (!(e instanceof ConfigErrors)) throw e
      message = e.errors[0]!.detail
    }
    const full = [...path, key].join('.')
    t.equal(message, `unknown key "${[...path, typo].join('.')}"; did you mean "${full}"?`, full)
  }
  for (const key of Object.keys(groupSchema)) {
    let message = ''
    try {
      parseConfig('k.yaml', `groups:\n  - {name: g, clients: [10.0.0.0/8], ${key}x: 1}\n`, { resolvConf })
    } catch (e) {
      if (!(e instanceof ConfigErrors)) throw e
      message = e.errors[0]!.detail
    }
    t.equal(message, `unknown key "groups[].${key}x"; did you mean "groups[].${key}"?`, `groups[].${key}`)
  }
})

t.test('bounds come from the schema: each int key rejects min-1 and max+1 with its range', async (t) => {
  for (const leaf of leaves(configSchema.fields)) {
    if (leaf.field.kind !== 'int') continue
    const { min, max } = leaf.field
    const parts = leaf.yaml.split('.')
    for (const bad of [min - 1, max + 1]) {
      const yaml = parts.map((k, i) => `${'  '.repeat(i)}${k}:`).join('\n') + ` ${bad}\n`
      let message = ''
      try {
        parseConfig('b.yaml', yaml, { resolvConf })
      } catch (e) {
        if (!(e instanceof ConfigErrors)) throw e
        message = e.errors[0]!.detail
      }
      t.equal(message, `${leaf.yaml} must be a whole number from ${min} to ${max}, not ${bad}`, `${leaf.yaml}: ${bad}`)
    }
  }
})

t.test('a value that is not a list is reported once (it used to be reported twice, then as empty)', async (t) => {
  const errorsOf = (text: string): string[] => {
    try {
      parseConfig('x.yaml', text, { resolvConf })
    } catch (e) {
      if (e instanceof ConfigErrors) return e.errors.map((x) => x.message)
      throw e
    }
    return []
  }
  t.same(errorsOf('report_ports: 5\n'), ['x.yaml:1:15: report_ports must be a list ([a, b] or "- a" lines), not 5'])
  t.same(errorsOf('groups:\n  - {name: a, clients: 5}\n'), ['x.yaml:2:24: groups.a.clients must be a list ([a, b] or "- a" lines), not 5'])
  t.same(errorsOf('report_ports: []\n'), ['x.yaml:1:15: report_ports is empty; leave it out for the default [443/tcp]'])
  t.same(errorsOf('groups:\n  - {name: a, clients: []}\n'), ['x.yaml:2:24: groups.a.clients is empty: the group could never be chosen'])
})

t.test('preset files are read through presetFileSchema', async (t) => {
  const presets = join(dir, 'presets')
  mkdirSync(presets)
  writeFileSync(join(presets, 'p.yaml'), 'descripton: typo\nsource: [not, text]\nallow: [a.example.com]\n')
  try {
    parseConfig('x.yaml', 'presets: [p]\n', { resolvConf, presetsDir: presets })
    t.fail('expected errors')
  } catch (e) {
    if (!(e instanceof ConfigErrors)) throw e
    t.same(e.errors.map((x) => x.message), [
      `${join(presets, 'p.yaml')}:1:1: unknown key "descripton"; did you mean "description"?`,
      `${join(presets, 'p.yaml')}:2:9: source must be a string, not a list`,
    ])
  }
})
