/**
 * Issue #13 item 2: warnings for names that cannot exist (a label starting or ending
 * with "-", an `xn--` label that is not punycode) and for a policy that allows nothing.
 * Warnings go to stderr from `validate` and leave the exit code at 0.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseConfig } from '../../src/config/load.js'
import { impossibleLabel } from '../../src/policy/warnings.js'
import { CLI } from '../helpers/daemon.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-warnings-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')
const warningsOf = (text: string) => parseConfig('w.yaml', text, { resolvConf, localPresetsDir: null }).warnings

t.test('labels that start or end with a hyphen, xn-- labels that are not punycode', async (t) => {
  t.equal(impossibleLabel('-api.example.com'), 'label "-api" starts with a hyphen: no host name can have one')
  t.equal(impossibleLabel('api-.example.com'), 'label "api-" ends with a hyphen: no host name can have one')
  t.equal(impossibleLabel('xn--abc.example'), 'label "xn--abc" is not valid punycode: no internationalized name is written so')
  t.equal(impossibleLabel('a.xn--zz.example'), 'label "xn--zz" is not valid punycode: no internationalized name is written so', 'decodes to plain ASCII')
  for (const ok of ['xn--bcher-kva.de', 'a-b.example.com', 'xn--ls8h.la', '_dmarc.example.com', 'example.com', 'x--y.example']) t.equal(impossibleLabel(ok), null, ok)
  t.same(warningsOf('allow:\n  - -api.example.com\n  - "*.xn--abc.example"\n  - "{ok,bad-}.example.com"\n  - bücher.de\n'), [
    'w.yaml:2:5: warning: "-api.example.com": label "-api" starts with a hyphen: no host name can have one',
    'w.yaml:3:5: warning: "*.xn--abc.example": label "xn--abc" is not valid punycode: no internationalized name is written so',
    'w.yaml:4:5: warning: "{ok,bad-}.example.com" (in "bad-.example.com"): label "bad-" ends with a hyphen: no host name can have one',
  ], 'bücher.de becomes valid punycode and is not reported')
  t.same(warningsOf('deny:\n  - -x.example.com\nallow: [a.example.com]\n'), ['w.yaml:2:5: warning: "-x.example.com": label "-x" starts with a hyphen: no host name can have one'], 'deny entries too')
})

t.test('an empty policy: "0 rules: every name is blocked", unless something anywhere can pass', async (t) => {
  const empty = 'w.yaml: warning: 0 rules: every name is blocked (no preset, allow, report or included entry anywhere; mode: report lets names through while you build the list)'
  t.same(warningsOf(''), [empty])
  t.same(warningsOf('deny: [x.example.com]\n'), [empty], 'deny entries allow nothing')
  t.same(warningsOf('groups:\n  - {name: g, clients: [10.0.0.0/8]}\n'), [empty], 'a group that allows nothing either')
  t.same(warningsOf('allow: [a.example.com]\n'), [])
  t.same(warningsOf('mode: report\n'), [], 'report mode lets names through')
  t.same(warningsOf('report: [a.example.com]\n'), [])
  t.same(warningsOf('groups:\n  - {name: g, clients: [10.0.0.0/8], allow: [a.example.com]}\n'), [], 'the top level may allow nothing beside a group that allows')
})

t.test('validate prints the warnings on stderr and still exits 0', async (t) => {
  const file = join(dir, 'v.yaml')
  writeFileSync(file, `dns: {upstreams: ["192.0.2.53"]}\nallow: [-api.example.com]\n`)
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'validate', '-c', file], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }))
  })
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, `${file}:2:9: warning: "-api.example.com": label "-api" starts with a hyphen: no host name can have one\n`)
  t.match(r.stdout, /valid; 1 rules from 1 entries/)
})
