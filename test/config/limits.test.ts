import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors } from '../../src/errors.js'
import { MAX_CONFIG_NAMES, parseConfig } from '../../src/config/load.js'
import { DEFAULT_MAX_CONFIG_BYTES, maxConfigBytes } from '../../src/config/read-file.js'
import { MAX_ERRORS } from '../../src/config/yaml-reader.js'
import { CLI } from '../helpers/daemon.js'

/**
 * Large and hostile configurations (issue 17, item 11): a big allowlist loads, an
 * oversized file and a brace-product bomb are refused with exit 2 before the costly
 * part, and messages never echo a whole long scalar.
 */
const dir = mkdtempSync(join(tmpdir(), 'egressd-limits-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')

interface Run { code: number; stdout: string; stderr: string; ms: number }
function egressd(env: Record<string, string>, ...args: string[]): Promise<Run> {
  const start = performance.now()
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 120_000, maxBuffer: 64 << 20, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, ms: performance.now() - start })
    })
  })
}

function errorsOf(text: string, options: Parameters<typeof parseConfig>[2] = {}): string[] {
  try {
    parseConfig('l.yaml', text, { resolvConf, ...options })
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors.map((x) => x.message)
    throw e
  }
  return []
}

const allowList = (n: number, prefix = 'h') => {
  const lines = ['allow:']
  for (let i = 0; i < n; i++) lines.push(`  - ${prefix}${i}.example.com`)
  return lines.join('\n') + '\n'
}

t.test('a 200 000-entry allowlist validates (it used to overflow the stack: exit 70)', async (t) => {
  const file = join(dir, 'big-list.yaml')
  writeFileSync(file, allowList(200_000))
  const r = await egressd({}, 'validate', '-c', file)
  t.equal(r.code, 0, r.stderr.slice(0, 500))
  t.match(r.stdout, /valid; 200000 rules from 200000 entries/)
  t.comment(`validate of 200 000 entries: ${r.ms.toFixed(0)} ms`)
})

t.test('a 150 000-entry preset loads (entries are appended in a loop, not spread into push)', async (t) => {
  const presets = join(dir, 'presets')
  mkdirSync(presets)
  writeFileSync(join(presets, 'huge.yaml'), 'description: generated\n' + allowList(150_000, 'p'))
  const { config } = parseConfig('p.yaml', 'presets: [huge]\nallow: [a.example.com]\n', { resolvConf, presetsDir: presets })
  t.equal(config.policy.length, 150_001)
})

t.test('a file over the size limit is refused at file:1:1 before it is parsed', async (t) => {
  const file = join(dir, 'oversized.yaml')
  // 17 MiB of a plain list: the costly kind to parse (about 1 s per MB on the old code).
  writeFileSync(file, allowList(Math.ceil((17 << 20) / 20)).slice(0, 17 << 20))
  const r = await egressd({}, 'validate', '-c', file)
  t.equal(r.code, 2)
  t.equal(r.stderr, `${file}:1:1: configuration is ${17 << 20} bytes, more than the limit of ${DEFAULT_MAX_CONFIG_BYTES} bytes (EGRESSD_MAX_CONFIG_BYTES raises it; docs/configuration.md)\n`)
  t.ok(r.ms < 5000, `refused in ${r.ms.toFixed(0)} ms (node's start included)`)
})

t.test('EGRESSD_MAX_CONFIG_BYTES sets the limit; a bad value is exit 2 with a message', async (t) => {
  const file = join(dir, 'small.yaml')
  writeFileSync(file, allowList(100))
  t.equal((await egressd({ EGRESSD_MAX_CONFIG_BYTES: '64K' }, 'validate', '-c', file)).code, 0)
  const low = await egressd({ EGRESSD_MAX_CONFIG_BYTES: '1K' }, 'validate', '-c', file)
  t.equal(low.code, 2)
  t.match(low.stderr, /:1:1: configuration is \d+ bytes, more than the limit of 1024 bytes/)
  const bad = await egressd({ EGRESSD_MAX_CONFIG_BYTES: 'lots' }, 'validate', '-c', file)
  t.equal(bad.code, 2)
  t.match(bad.stderr, /:1:1: EGRESSD_MAX_CONFIG_BYTES="lots" is not a size from 1K to 256M/)
  t.equal(maxConfigBytes({}), 16 << 20)
  t.equal(maxConfigBytes({ EGRESSD_MAX_CONFIG_BYTES: '67108864' }), 64 << 20)
  t.equal(maxConfigBytes({ EGRESSD_MAX_CONFIG_BYTES: '64MiB' }), 64 << 20)
  t.equal(maxConfigBytes({ EGRESSD_MAX_CONFIG_BYTES: '2k' }), 2048)
  t.type(maxConfigBytes({ EGRESSD_MAX_CONFIG_BYTES: '1G' }), 'string', 'above the 256 MiB ceiling')
  t.type(maxConfigBytes({ EGRESSD_MAX_CONFIG_BYTES: '100' }), 'string', 'below 1 KiB')
})

t.test('an endless file (/dev/zero) is read only up to the limit', async (t) => {
  const r = await egressd({ EGRESSD_MAX_CONFIG_BYTES: '64K' }, 'validate', '-c', '/dev/zero')
  t.equal(r.code, 2)
  t.equal(r.stderr, '/dev/zero:1:1: configuration is larger than the limit of 65536 bytes (EGRESSD_MAX_CONFIG_BYTES raises it; docs/configuration.md)\n')
})

t.test('a brace-product bomb is refused before it is expanded', async (t) => {
  const file = join(dir, 'bomb.yaml')
  const lines = ['allow:']
  for (let i = 0; i < 300; i++) lines.push(`  - "{0..99}{0..99}.b${i}.example.com"`)
  writeFileSync(file, lines.join('\n') + '\n')
  // 11 KB that expanded to 3 000 000 names: the old code accepted it in 24 s and 600 MB.
  const r = await egressd({}, 'validate', '-c', file)
  t.equal(r.code, 2)
  const fullAt = Math.floor(MAX_CONFIG_NAMES / 10_000) + 2
  t.equal(r.stderr, `${file}:${fullAt}:5: allow: "{0..99}{0..99}.b${fullAt - 2}.example.com" brings the configuration to more than ${MAX_CONFIG_NAMES} names` +
    ` (${(fullAt - 2) * 10_000} before it, 10000 from it; each brace expansion counts its names, each group its own); later entries were not expanded\n`)
  t.ok(r.ms < 15_000, `refused in ${r.ms.toFixed(0)} ms`)
})

t.test('the name budget counts brace products, report and group entries, and presets per use', async (t) => {
  const max = { maxNames: 100 }
  t.same(errorsOf('allow: ["{0..9}.a{0..9}.example.com"]\n', max), [], '100 names: at the limit')
  t.match(errorsOf('allow: ["{0..9}.a{0..9}.example.com", b.example.com]\n', max), [/^l\.yaml:1:39: allow: "b\.example\.com" brings the configuration to more than 100 names \(100 before it, 1 from it/])
  t.match(errorsOf('allow: ["{0..49}.a.example.com"]\nreport: ["{0..49}.r.example.com"]\ndns:\n  rebind_exempt: [x.example.com]\n', max), [/^l\.yaml:2:10: report: "\{0\.\.49\}\.r\.example\.com" brings .* \(51 before it, 50 from it/], 'dns.rebind_exempt (read first) and report count')
  const groups = (n: number) => 'groups:\n' + Array.from({ length: n }, (_, i) => `  - {name: g${i}, clients: [10.${i}.0.0/16], allow: ["{0..29}.g.example.com"]}\n`).join('')
  t.same(errorsOf(groups(3), max), [], '3 groups of 30')
  t.match(errorsOf(groups(4), max), [/^l\.yaml:5:.*groups\.g3\.allow: "\{0\.\.29\}\.g\.example\.com" brings/])
  // dt-cloud-connector-gen2 names a handful of hosts and time{1,2,3,4}: counted at each use.
  const { config } = parseConfig('l.yaml', 'presets: [dt-cloud-connector-gen2]\n', { resolvConf })
  const size = config.policy.length + 3
  t.same(errorsOf('presets: [dt-cloud-connector-gen2]\n', { maxNames: size }), [])
  t.match(errorsOf('presets: [dt-cloud-connector-gen2]\ngroups:\n  - {name: a, clients: [10.0.0.0/8], presets: [dt-cloud-connector-gen2]}\n', { maxNames: size }),
    [/^l\.yaml:3:.*groups\.a\.presets: preset "dt-cloud-connector-gen2" brings the configuration to more than/])
  t.match(errorsOf('allow: ["{0..99999}.example.com"]\n', max), [/expands to 100000 names, at most 10000/], 'one entry past its own limit keeps its message')
})

t.test('messages show at most 100 characters of a value, then its length', async (t) => {
  const long = 'a'.repeat(100_000)
  const cases = [
    `dns:\n  listen: ["${long}"]\n`,
    `allow: ["${long}"]\n`,
    `sni:\n  on_block: ${long}\n`,
    `dns:\n  ? ${long}\n  : 1\n`,
    `firewall:\n  nftables:\n    table: ${long}\n`,
    `allow: [{name: a.example.com, ports: ["${long}"]}]\n`,
  ]
  for (const text of cases) {
    const [message] = errorsOf(text)
    t.ok(message !== undefined && message.length < 400, message?.slice(0, 300))
    t.match(message, /"(dns\.)?a{56,60}…" \((100000|100004) characters\)/)
  }
  t.same(errorsOf('sni:\n  on_block: drop\n'), ['l.yaml:2:13: sni.on_block must be one of reset, alert, not "drop"'], 'short values unchanged')
})

t.test(`at most ${MAX_ERRORS} problems are listed, then how many more`, async (t) => {
  const lines = ['allow:']
  for (let i = 0; i < 250; i++) lines.push(`  - h${i}..example.com`)
  const errors = errorsOf(lines.join('\n') + '\n')
  t.equal(errors.length, MAX_ERRORS + 1)
  t.match(errors[0], /^l\.yaml:2:/)
  t.equal(errors[MAX_ERRORS], `l.yaml:${MAX_ERRORS + 1}:9: 150 more problems not listed (at most ${MAX_ERRORS} are)`)
})

t.test('YAML nested deeper than the parser\'s stack: one error that says so, not "Maximum call stack size exceeded"', async (t) => {
  const errors = errorsOf('allow: ' + '['.repeat(100_000) + ']'.repeat(100_000) + '\n')
  t.equal(errors.length, 1)
  t.match(errors[0], /^l\.yaml:1:\d+: the YAML is nested too deeply to read \(lists or mappings inside each other; a configuration needs a few levels\)$/)
})
