/**
 * Issue #13 item 1: an allow wildcard at or above a public suffix is a configuration
 * error unless its entry says `public_suffix: true`; `suggest` and the loader share the
 * rule (src/policy/public-suffix.ts).
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors } from '../../src/errors.js'
import { parseConfig, PRESETS_DIR, type LoadOptions } from '../../src/config/load.js'
import { wildcardOverPublicSuffix } from '../../src/policy/public-suffix.js'
import { collapse, collapsible } from '../../src/suggest/collapse.js'
import { expandPattern } from '../../src/policy/pattern.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-psl-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')
const opts: LoadOptions = { resolvConf, localPresetsDir: null }

function load(text: string, o: LoadOptions = opts): { errors: string[]; warnings: string[] } {
  try {
    return { errors: [], warnings: parseConfig('p.yaml', text, o).warnings }
  } catch (e) {
    if (e instanceof ConfigErrors) return { errors: e.errors.map((x) => x.message), warnings: [] }
    throw e
  }
}

t.test('the rule: ICANN, private and unlisted suffixes are hits; registrable domains and below are not', async (t) => {
  t.same(wildcardOverPublicSuffix('com'), { suffix: 'com', section: 'icann' })
  t.same(wildcardOverPublicSuffix('co.uk'), { suffix: 'co.uk', section: 'icann' })
  t.same(wildcardOverPublicSuffix('github.io'), { suffix: 'github.io', section: 'private' })
  t.same(wildcardOverPublicSuffix('s3.amazonaws.com'), { suffix: 's3.amazonaws.com', section: 'private' })
  t.same(wildcardOverPublicSuffix('lan'), { suffix: 'lan', section: 'unlisted' })
  for (const ok of ['example.com', 'eu.example.co.uk', 'alice.github.io', 'balena-cloud.com', 'pool.ntp.org', 'docker.io']) {
    t.equal(wildcardOverPublicSuffix(ok), null, ok)
  }
})

t.test('allow and report refuse *.com, *.co.uk, *.github.io and *.s3.amazonaws.com with a hint, at file:line:col', async (t) => {
  const r = load('allow:\n  - "*.com"\n  - "*.co.uk"\n  - "*.github.io"\n  - api.example.com\nreport:\n  - "*.s3.amazonaws.com"\n')
  t.same(r.errors, [
    'p.yaml:2:5: allow: "*.com" allows every name under "com", a public suffix: anyone can register names under it; name a domain below it' +
      ' (e.g. "*.example.com"), or write {name: "*.com", public_suffix: true} if every name under it is meant',
    'p.yaml:3:5: allow: "*.co.uk" allows every name under "co.uk", a public suffix: anyone can register names under it; name a domain below it' +
      ' (e.g. "*.example.co.uk"), or write {name: "*.co.uk", public_suffix: true} if every name under it is meant',
    'p.yaml:4:5: allow: "*.github.io" allows every name under "github.io", a public suffix (private section of the Public Suffix List):' +
      ' anyone can publish names under it; name a domain below it (e.g. "*.example.github.io"), or write {name: "*.github.io", public_suffix: true} if every name under it is meant',
    'p.yaml:7:5: report: "*.s3.amazonaws.com" allows every name under "s3.amazonaws.com", a public suffix (private section of the Public Suffix List):' +
      ' anyone can publish names under it; name a domain below it (e.g. "*.example.s3.amazonaws.com"), or write {name: "*.s3.amazonaws.com", public_suffix: true} if every name under it is meant',
  ])
})

t.test('a brace expansion is refused at its first name over a public suffix', async (t) => {
  const r = load('allow: ["*.{example,github}.io"]\n')
  t.equal(r.errors.length, 1)
  t.match(r.errors[0], /^p\.yaml:1:9: allow: "\*\.\{example,github\}\.io" allows every name under "github\.io"/)
})

t.test('deny, exact names and wildcards below a registrable domain are fine', async (t) => {
  const r = load('allow: ["*.example.github.io", "com", "*.balena-cloud.com", "*.eu.example.co.uk"]\ndeny: ["*.com", "*.github.io"]\n')
  t.same(r.errors, [])
})

t.test('public_suffix: true accepts it; where it changes nothing it is a warning, and it validates as a boolean', async (t) => {
  const ok = parseConfig('p.yaml', 'allow:\n  - {name: "*.github.io", public_suffix: true}\n', opts)
  t.same(ok.config.policy.map((e) => e.entry), ['*.github.io'])
  t.same(ok.warnings, [])
  t.same(load('allow:\n  - {name: "*.example.com", public_suffix: true}\ndeny:\n  - {name: "*.com", public_suffix: true}\n').warnings, [
    'p.yaml:2:44: warning: allow[].public_suffix is not needed: "*.example.com" stays within one registrable domain',
    'p.yaml:4:36: warning: deny[].public_suffix has no effect in deny (a deny wildcard over a public suffix needs no marking)',
  ])
  t.same(load('allow:\n  - {name: "*.github.io", public_suffix: yes}\n').errors, [
    'p.yaml:2:12: allow: "*.github.io" allows every name under "github.io", a public suffix (private section of the Public Suffix List):' +
      ' anyone can publish names under it; name a domain below it (e.g. "*.example.github.io"), or write {name: "*.github.io", public_suffix: true} if every name under it is meant',
    'p.yaml:2:42: allow[].public_suffix must be true or false, not "yes"',
  ], 'an invalid value does not accept the wildcard')
  t.same(load('allow:\n  - {name: "*.github.io", public_sufix: true}\n').errors[1], 'p.yaml:2:27: unknown key "allow[].public_sufix"; did you mean "allow[].public_suffix"?')
})

t.test('groups, rebind_exempt, presets and the dangerous wildcard in each', async (t) => {
  t.match(load('groups:\n  - {name: g, clients: [10.0.0.0/8], allow: ["*.co.uk"]}\n').errors, [/^p\.yaml:2:46: groups\.g\.allow: "\*\.co\.uk" allows every name under "co\.uk"/])
  t.match(load('groups:\n  - {name: g, clients: [10.0.0.0/8], report: ["*.uk"]}\n').errors, [/^p\.yaml:2:47: groups\.g\.report: "\*\.uk" allows every name/])
  t.match(load('dns:\n  rebind_exempt: ["*.arpa"]\n').errors, [/^p\.yaml:2:19: dns\.rebind_exempt: "\*\.arpa" allows every name under "arpa"/])
  const presets = join(dir, 'presets')
  mkdirSync(presets)
  writeFileSync(join(presets, 'vendor.yaml'), 'description: x\nallow:\n  - "*.herokuapp.com"\n')
  t.same(load('presets: [vendor]\n', { ...opts, presetsDir: presets }).errors.map((e) => e.replace(/ allows every name.*/, '')),
    [`${join(presets, 'vendor.yaml')}:3:5: allow: "*.herokuapp.com"`], 'the error points into the preset file')
})

t.test('every shipped preset validates (the DT and balena wildcards stay inside registrable domains)', async (t) => {
  const names = readdirSync(PRESETS_DIR).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -5))
  t.ok(names.length >= 3)
  for (const name of names) t.same(load(`presets: [${name}]\n`).errors, [], name)
})

t.test('suggest uses the same rule: no proposal is a wildcard the loader would refuse', async (t) => {
  for (const p of ['com', 'co.uk', 'github.io', 's3.amazonaws.com', 'lan']) t.notOk(collapsible(p), p)
  const observed = new Map<string, { count: number; dns: number; sni: number; first: string; last: string }>()
  for (const parent of ['github.io', 'co.uk', 'example.com', 'herokuapp.com']) {
    for (let i = 0; i < 6; i++) observed.set(`n${i}.${parent}`, { count: 1, dns: 1, sni: 0, first: '', last: '' })
  }
  const proposals = collapse(observed, 5)
  t.same(proposals.filter((p) => p.wildcard).map((p) => p.pattern), ['*.example.com'])
  const yaml = 'allow:\n' + proposals.map((p) => `  - "${p.pattern}"\n`).join('')
  t.same(load(yaml).errors, [], 'every proposal loads')
  for (const p of proposals) if (p.wildcard) t.equal(wildcardOverPublicSuffix(expandPattern(p.pattern).names[0]!), null)
})

t.test('a wildcard above a public suffix inside a registrable domain is refused too: *.amazonaws.com reaches every S3 bucket', async (t) => {
  t.same(wildcardOverPublicSuffix('amazonaws.com'), { suffix: 's3.amazonaws.com', section: 'private', below: true }, 'the nearest suffix inside it')
  t.match(wildcardOverPublicSuffix('eu-west-1.amazonaws.com'), { section: 'private', below: true, suffix: /\.eu-west-1\.amazonaws\.com$/ })
  t.match(wildcardOverPublicSuffix('core.windows.net'), { section: 'private', below: true })
  for (const ok of ['iot.eu-west-1.amazonaws.com', 'amazon.com', 'city.kawasaki.jp', 'example.com']) t.equal(wildcardOverPublicSuffix(ok), null, ok)
  t.same(load('allow:\n  - "*.amazonaws.com"\n').errors, [
    'p.yaml:2:5: allow: "*.amazonaws.com" allows every name under "s3.amazonaws.com", a public suffix inside it (private section of the Public Suffix List):' +
      ' anyone can publish names under it; name a domain below it (e.g. "*.example.amazonaws.com"), or write {name: "*.amazonaws.com", public_suffix: true} if every name under it is meant',
  ])
  t.same(load('allow:\n  - "*.iot.eu-west-1.amazonaws.com"\n  - {name: "*.amazonaws.com", public_suffix: true}\ndeny: ["*.amazonaws.com"]\n').errors, [], 'below it, marked, or in deny: accepted')
  t.notOk(collapsible('amazonaws.com'), 'suggest does not propose it either')
})
