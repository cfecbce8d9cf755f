/**
 * Issue #13 item 5: local lists that survive upgrades. `include:` takes files and globs
 * whose allow/deny/report lists are added, errors point into the included file, a reload
 * re-reads them and the config hash covers them; presets are looked up in
 * /etc/egressd/presets (here: a temporary directory) before the shipped ones. Bad input:
 * loops, directories, a 10 MB file, a glob of thousands of files: a clear error, fast.
 */
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { ConfigErrors } from '../../src/errors.js'
import { loadConfig, MAX_INCLUDE_FILES, PRESETS_DIR, type LoadOptions } from '../../src/config/load.js'
import { expandInclude } from '../../src/config/glob.js'
import { Daemon } from '../../src/daemon/daemon.js'
import type { Logger } from '../../src/log/logger.js'
import { decode, fakeUpstream, query, udpExchange } from '../dns/helpers.js'
import { CLI } from '../helpers/daemon.js'

const root = mkdtempSync(join(tmpdir(), 'egressd-include-'))
const resolvConf = join(root, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')
const opts: LoadOptions = { resolvConf, localPresetsDir: null }
let n = 0

/** A fresh directory holding `files` (path → text; a path ending in / is a directory). */
function tree(files: Record<string, string>): string {
  const dir = join(root, `t${n++}`)
  mkdirSync(dir)
  for (const [path, text] of Object.entries(files)) {
    if (path.endsWith('/')) mkdirSync(join(dir, path), { recursive: true })
    else {
      mkdirSync(join(dir, path, '..'), { recursive: true })
      writeFileSync(join(dir, path), text)
    }
  }
  return dir
}

function errorsOf(file: string, o: LoadOptions = opts): string[] {
  try {
    loadConfig(file, o)
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors.map((x) => x.message)
    throw e
  }
  return []
}

t.test('files and globs: entries in order, sources in the included file, relative to the including file', async (t) => {
  const dir = tree({
    'egressd.yaml': 'allow: [main.example.com]\ndeny: [bad.example.com]\ninclude:\n  - allow.d/*.yaml\n  - extra/one.yaml\n',
    'allow.d/b.yaml': 'allow:\n  - b.example.com\n',
    'allow.d/a.yaml': 'allow: [a.example.com]\ndeny: [a-bad.example.com]\nreport: [try.example.com]\n',
    'allow.d/.a.yaml.swp': 'not: yaml: at all',
    'allow.d/notes.txt': 'x',
    'allow.d/dir.yaml/': '',
    'extra/one.yaml': 'include: [nested/two.yaml]\nallow: [one.example.com]\n',
    'extra/nested/two.yaml': 'allow: [{name: two.example.com, ports: [123/udp]}]\n',
  })
  const { config, warnings } = loadConfig(join(dir, 'egressd.yaml'), opts)
  t.same(config.policy.map((e) => `${e.action} ${e.entry}`), [
    'allow main.example.com', 'allow a.example.com', 'allow b.example.com', 'allow one.example.com', 'allow two.example.com',
    'deny bad.example.com', 'deny a-bad.example.com',
  ], 'the file\'s own allow, then included allow in file order (globs sorted), then deny likewise')
  t.same(config.report?.map((e) => e.entry), ['try.example.com'])
  t.equal(config.policy.find((e) => e.entry === 'b.example.com')?.source, `${join(dir, 'allow.d/b.yaml')}:2:5`)
  t.same(config.policy.find((e) => e.entry === 'two.example.com')?.ports, [{ port: 123, proto: 'udp' }])
  t.same(config.includes, ['a.yaml', 'b.yaml', 'one.yaml', 'two.yaml'].map((f, i) => join(dir, i < 2 ? 'allow.d' : i === 2 ? 'extra' : 'extra/nested', f)))
  t.same(warnings, [])
})

t.test('a glob that matches nothing is fine; a named file that is missing is an error at the include item', async (t) => {
  const dir = tree({ 'e.yaml': 'allow: [a.example.com]\ninclude:\n  - none.d/*.yaml\n  - "*.list"\n  - missing.yaml\n' })
  t.same(errorsOf(join(dir, 'e.yaml')), [`${join(dir, 'e.yaml')}:5:5: include: "missing.yaml" (${join(dir, 'missing.yaml')}): no such file`])
})

t.test('errors inside an included file point into it with file:line:col; its keys are checked', async (t) => {
  const dir = tree({
    'e.yaml': 'include: [local.yaml]\n',
    'local.yaml': 'allow:\n  - "*.com"\n  - {name: x.example.com, public_suffix: maybe}\ndns:\n  listen: []\nalow: []\n',
  })
  const local = join(dir, 'local.yaml')
  const errors = errorsOf(join(dir, 'e.yaml'))
  t.match(errors, [
    new RegExp(`^${local}:2:5: allow: "\\*\\.com" allows every name under "com"`),
    `${local}:3:42: allow[].public_suffix must be true or false, not "maybe"`,
    `${local}:4:1: "dns" belongs in the main configuration file; an included file holds allow, deny, report and include`,
    `${local}:6:1: unknown key "alow"; did you mean "allow"?`,
  ])
  t.equal(errors.length, 4)
})

t.test('include itself validates: a list of strings, each a path with * and ? in the last part only', async (t) => {
  const dir = tree({ 'a.yaml': 'include: allow.d/*.yaml\n', 'b.yaml': 'include: [1, ""]\n', 'c.yaml': 'include: ["*.d/x.yaml"]\n' })
  t.same(errorsOf(join(dir, 'a.yaml')), [`${join(dir, 'a.yaml')}:1:10: include must be a list ([a, b] or "- a" lines), not "allow.d/*.yaml"`])
  t.same(errorsOf(join(dir, 'b.yaml')), [`${join(dir, 'b.yaml')}:1:11: include must be a string, not 1`, `${join(dir, 'b.yaml')}:1:14: include: "": an empty path`])
  t.same(errorsOf(join(dir, 'c.yaml')), [`${join(dir, 'c.yaml')}:1:11: include: "*.d/x.yaml": "*" and "?" may only be in the last part of an include path (e.g. /etc/egressd/allow.d/*.yaml)`])
})

t.test('an include loop, a file that includes itself through a glob, and a directory: errors, not hangs', async (t) => {
  const dir = tree({
    'main.yaml': 'include: [a.yaml]\n',
    'a.yaml': 'include: [b.yaml]\nallow: [a.example.com]\n',
    'b.yaml': 'include: [a.yaml]\n',
    'self/egressd.yaml': 'allow: [x.example.com]\ninclude: ["*.yaml"]\n',
    'dir/egressd.yaml': 'allow: [x.example.com]\ninclude: [allow.d]\n',
    'dir/allow.d/x.yaml': 'allow: [y.example.com]\n',
  })
  const a = join(dir, 'a.yaml')
  const b = join(dir, 'b.yaml')
  t.same(errorsOf(join(dir, 'main.yaml')), [`${b}:1:11: include: "a.yaml" (${a}): include loop: ${a} → ${b} → ${a}`])
  const self = join(dir, 'self/egressd.yaml')
  t.same(errorsOf(self), [`${self}:2:11: include: "*.yaml" (${self}): include loop: ${self} → ${self} (the file includes itself)`])
  const withDir = join(dir, 'dir/egressd.yaml')
  t.same(errorsOf(withDir), [`${withDir}:2:11: include: "allow.d" (${join(dir, 'dir/allow.d')}): is a directory; to include the files in it write "allow.d/*.yaml"`])
  // A symlink loop on disk is a loop of the same file under two names.
  const link = tree({ 'real.yaml': 'include: [alias.yaml]\n', 'main.yaml': 'include: [real.yaml]\n' })
  symlinkSync(join(link, 'real.yaml'), join(link, 'alias.yaml'))
  t.match(errorsOf(join(link, 'main.yaml')), [/include loop: .*real\.yaml → .*alias\.yaml \(the file includes itself\)$/])
})

t.test('a 10 MB include is refused from its size, before it is read; the byte bound is shared with the file', async (t) => {
  const main = 'allow: [a.example.com]\ninclude: [big.yaml]\n'
  const dir = tree({ 'e.yaml': main, 'big.yaml': '' })
  truncateSync(join(dir, 'big.yaml'), 10 << 20)
  const start = performance.now()
  const errors = errorsOf(join(dir, 'e.yaml'), { ...opts, maxBytes: 1 << 20 })
  const ms = performance.now() - start
  t.same(errors, [`${join(dir, 'e.yaml')}:2:11: include: "big.yaml" (${join(dir, 'big.yaml')}): ${10 << 20} bytes is more than the ${(1 << 20) - main.length} bytes left` +
    ` of the ${1 << 20}-byte limit, which the configuration and every preset and included file share (EGRESSD_MAX_CONFIG_BYTES raises it; docs/configuration.md)`])
  t.ok(ms < 1000, `refused in ${ms.toFixed(0)} ms`)
  const ok = tree({ 'e.yaml': 'include: [small.yaml]\n', 'small.yaml': 'allow: [a.example.com]\n' })
  t.same(errorsOf(join(ok, 'e.yaml'), { ...opts, maxBytes: 1024 }), [], 'within the bound')
})

t.test('a named pipe or a device named by include or as a preset is refused before it is opened: a pipe with no writer would block the open for ever', async (t) => {
  const dir = tree({ 'e.yaml': 'allow: [a.example.com]\ninclude:\n  - fifo.yaml\n  - /dev/zero\n' })
  const fifo = join(dir, 'fifo.yaml')
  execFileSync('mkfifo', [fifo])
  const local = tree({})
  execFileSync('mkfifo', [join(local, 'vendor.yaml')])
  writeFileSync(join(dir, 'p.yaml'), 'presets: [vendor]\n')
  // In a child process: before the fix the open of the pipe never returns.
  const validate = (file: string, env: NodeJS.ProcessEnv = {}) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'validate', '-c', file], { timeout: 10_000, env: { ...process.env, ...env } }, (err, _stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stderr }))
  })
  const r = await validate(join(dir, 'e.yaml'))
  t.equal(r.code, 2, 'exit 2, not a hang')
  t.equal(r.stderr, [
    `${join(dir, 'e.yaml')}:3:5: include: "fifo.yaml" (${fifo}): is a named pipe, not a file`,
    `${join(dir, 'e.yaml')}:4:5: include: "/dev/zero": is a character device, not a file`,
    '',
  ].join('\n'))
  const glob = tree({ 'e.yaml': 'allow: [a.example.com]\ninclude: ["*.list"]\n' })
  execFileSync('mkfifo', [join(glob, 'x.list')])
  t.same(errorsOf(join(glob, 'e.yaml')), [], 'a glob passes over what is not a regular file, as before')
  t.match(errorsOf(join(dir, 'p.yaml'), { ...opts, localPresetsDir: local }), [new RegExp(`vendor\\.yaml:1:1: is a named pipe, not a file$`)], 'a preset likewise, not an empty preset')
})

t.test(`a glob matching thousands of files stops at ${MAX_INCLUDE_FILES}; so do several globs together`, async (t) => {
  const files: Record<string, string> = { 'e.yaml': 'include: ["many/*.yaml"]\n' }
  for (let i = 0; i < 3000; i++) files[`many/f${i}.yaml`] = `allow: [h${i}.example.com]\n`
  const dir = tree(files)
  const start = performance.now()
  t.same(errorsOf(join(dir, 'e.yaml')), [`${join(dir, 'e.yaml')}:1:11: include: "many/*.yaml": matches more than ${MAX_INCLUDE_FILES} files in ${join(dir, 'many')} (at most ${MAX_INCLUDE_FILES} files are included in all)`])
  t.ok(performance.now() - start < 2000, `refused in ${(performance.now() - start).toFixed(0)} ms`)
  const m = expandInclude('many/f1?.yaml', dir)
  t.same(typeof m !== 'string' && m.files.map((f) => f.slice(dir.length + 6)), ['f10.yaml', 'f11.yaml', 'f12.yaml', 'f13.yaml', 'f14.yaml', 'f15.yaml', 'f16.yaml', 'f17.yaml', 'f18.yaml', 'f19.yaml'], '? is one character; byte order')

  const split: Record<string, string> = { 'e.yaml': 'include: ["x/*.yaml", "y/*.yaml"]\n' }
  for (let i = 0; i < 200; i++) split[`x/f${i}.yaml`] = split[`y/f${i}.yaml`] = 'allow: [a.example.com]\n'
  const two = tree(split)
  t.match(errorsOf(join(two, 'e.yaml')), [new RegExp(`^${join(two, 'e.yaml')}:1:23: include: "y/\\*\\.yaml" \\(.*\\): more than ${MAX_INCLUDE_FILES} files included in all; later ones were not read$`)])
})

t.test('groups take include too; a file two groups include is read once', async (t) => {
  const dir = tree({
    'e.yaml': 'allow: [top.example.com]\ngroups:\n  - {name: a, clients: [10.1.0.0/16], include: [shared.yaml]}\n  - {name: b, clients: [10.2.0.0/16], include: [shared.yaml], allow: [b.example.com]}\n',
    'shared.yaml': 'allow: [shared.example.com]\nreport: [r.example.com]\n',
  })
  const { config } = loadConfig(join(dir, 'e.yaml'), opts)
  t.same(config.groups?.map((g) => [g.name, g.policy.map((e) => e.entry), g.report.map((e) => e.entry)]), [
    ['a', ['shared.example.com'], ['r.example.com']],
    ['b', ['b.example.com', 'shared.example.com'], ['r.example.com']],
  ])
  t.same(config.includes, [], 'the top level included nothing')
})

t.test('the hash: sha256 of the file alone, or of the file and what it includes', async (t) => {
  const dir = tree({ 'plain.yaml': 'allow: [a.example.com]\n', 'e.yaml': 'allow: [a.example.com]\ninclude: [x.yaml]\n', 'x.yaml': 'allow: [x.example.com]\n' })
  const plain = loadConfig(join(dir, 'plain.yaml'), opts).config
  t.equal(plain.hash, createHash('sha256').update('allow: [a.example.com]\n').digest('hex').slice(0, 12), 'what sha256sum prints')
  const before = loadConfig(join(dir, 'e.yaml'), opts).config.hash
  t.equal(loadConfig(join(dir, 'e.yaml'), opts).config.hash, before, 'stable')
  writeFileSync(join(dir, 'x.yaml'), 'allow: [y.example.com]\n')
  t.not(loadConfig(join(dir, 'e.yaml'), opts).config.hash, before, 'an edit of the included file changes it')
})

t.test('presets: the local directory first, then the shipped one; errors and sources name the file', async (t) => {
  const local = tree({
    'dt-cloud-connector-gen2.yaml': 'description: site copy\nallow: [site.example.com]\n',
    'vendor.yaml': 'description: a vendor\nallow: ["*.vendor.example"]\n',
  })
  const dir = tree({ 'e.yaml': 'presets: [vendor, dt-cloud-connector-gen2, dt-cloud-connector]\n' })
  const { config, warnings } = loadConfig(join(dir, 'e.yaml'), { ...opts, localPresetsDir: local })
  t.equal(config.policy[0]?.source, `preset vendor (${join(local, 'vendor.yaml')}:2:9)`)
  t.equal(config.policy[1]?.entry, 'site.example.com', 'the local copy takes the shipped one\'s place')
  t.ok(config.policy.some((e) => e.source.startsWith(`preset dt-cloud-connector (${join(PRESETS_DIR, 'dt-cloud-connector.yaml')}:`)), 'the others still come from the package')
  t.same(warnings, [`${join(dir, 'e.yaml')}:1:19: warning: preset "dt-cloud-connector-gen2" is read from ${join(local, 'dt-cloud-connector-gen2.yaml')}, which takes the place of the shipped preset of that name`])
  const sha = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 12)
  t.not(config.hash, sha('presets: [vendor, dt-cloud-connector-gen2, dt-cloud-connector]\n'), 'operator presets are hashed')
  const shipped = tree({ 'e.yaml': 'presets: [dt-cloud-connector]\n' })
  t.equal(loadConfig(join(shipped, 'e.yaml'), { ...opts, localPresetsDir: local }).config.hash, sha('presets: [dt-cloud-connector]\n'), 'shipped presets are not: the version label names them')
  t.match(errorsOf(join(dir, 'e.yaml')), [/unknown preset "vendor"; known presets: balena-device, dt-cloud-connector, dt-cloud-connector-gen2, dt-cloud-connector-wildcards$/], 'without the local directory')
})

t.test('a reload re-reads included files and reports the new hash', async (t) => {
  const up = await fakeUpstream((q) => ({ answers: [{ name: q.name, type: 'A', ttl: 300, data: '198.51.100.7' }] as never }))
  t.teardown(() => up.close())
  const dir = tree({
    'e.yaml': `dns:\n  listen: ["127.0.0.1:0"]\n  upstreams: ["127.0.0.1:${up.port}"]\nsni:\n  listen: ["127.0.0.1:0"]\nmetrics:\n  listen: null\ninclude: [allow.d/*.yaml]\n`,
    'allow.d/one.yaml': 'allow: [one.example.com]\n',
  })
  const sink = new Writable({ write: (_c, _e, cb) => cb() })
  const d = new Daemon(join(dir, 'e.yaml'), { log: pino({ level: 'silent' }, sink) as unknown as Logger, load: { localPresetsDir: null } })
  await d.start()
  t.teardown(() => d.stop())
  const port = d.addresses.dns.udp[0]!.port
  const rcode = async (name: string) => (decode((await udpExchange(port, query(name, 'A')))!).flags ?? 0) & 0xf
  const hash = async () => (await d.registry.getSingleMetric('egressd_config_info')!.get()).values[0]!.labels.hash
  t.equal(await rcode('one.example.com'), 0)
  t.equal(await rcode('two.example.com'), 3, 'NXDOMAIN before')
  const before = await hash()
  writeFileSync(join(dir, 'allow.d/two.yaml'), 'allow: [two.example.com]\n')
  t.match(await d.reload(), { ok: true, rules: 2 })
  t.equal(await rcode('two.example.com'), 0, 'a new file in allow.d is read on reload')
  t.not(await hash(), before, 'egressd_config_info{hash} changed with the included file')
  writeFileSync(join(dir, 'allow.d/two.yaml'), 'allow: ["*.com"]\n')
  t.match(await d.reload(), { ok: false, errors: [new RegExp(`^${join(dir, 'allow.d/two.yaml')}:1:9: allow: "\\*\\.com" allows every name`)] })
  t.equal(await rcode('two.example.com'), 0, 'a bad included file keeps the running policy')
})

t.test('check names the included file and position of the deciding rule', async (t) => {
  const dir = tree({
    'e.yaml': 'dns: {upstreams: ["192.0.2.53"]}\nallow: [a.example.com]\ninclude: [allow.d/*.yaml]\n',
    'allow.d/site.yaml': '# the site list\nallow:\n  - "*.vendor.example"\ndeny:\n  - bad.vendor.example\n',
  })
  const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'check', '-c', join(dir, 'e.yaml'), 'api.vendor.example', 'bad.vendor.example'], { timeout: 30_000 }, (err, stdout) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout }))
  })
  t.equal(r.code, 1, 'one name is blocked')
  const site = join(dir, 'allow.d/site.yaml')
  t.same(r.stdout.trim().split('\n'), [
    `allow\tapi.vendor.example\tallow *.vendor.example at ${site}:3:5 ports 443/tcp`,
    `block\tbad.vendor.example\tdeny bad.vendor.example at ${site}:5:5 (answered NODATA: allowed names exist below it)`,
  ])
})
