import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ConfigPathError, ETC_CONFIG, PACKAGED_CONFIG, resolveConfigPath } from '../../src/config/config-path.js'
import { EgressdError } from '../../src/errors.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-config-path-'))
const packaged = join(dir, 'packaged.yaml')
writeFileSync(packaged, 'log: {level: info}\n')

function thrown(f: () => unknown): ConfigPathError {
  try {
    f()
  } catch (e) {
    if (e instanceof ConfigPathError) return e
    throw e
  }
  throw new Error('expected a ConfigPathError')
}

t.test('defaults point at the system file and the shipped config/egressd.yaml', async (t) => {
  t.equal(ETC_CONFIG, '/etc/egressd/egressd.yaml')
  t.ok(existsSync(PACKAGED_CONFIG), `${PACKAGED_CONFIG} exists`)
  t.match(PACKAGED_CONFIG, /config\/egressd\.yaml$/)
})

t.test('-c wins, without looking at the system file', async (t) => {
  const etc = join(dir, 'explicit-etc.yaml')
  writeFileSync(etc, '')
  t.same(resolveConfigPath('mine.yaml', etc, packaged), { file: 'mine.yaml', source: 'explicit' })
  t.same(resolveConfigPath('/nonexistent/x.yaml', join(dir, 'also-missing.yaml'), packaged),
    { file: '/nonexistent/x.yaml', source: 'explicit' }, 'a missing -c file is loadConfig\'s error to report')
})

t.test('the system file when it exists', async (t) => {
  const etc = join(dir, 'etc.yaml')
  writeFileSync(etc, 'log: {level: debug}\n')
  t.same(resolveConfigPath(undefined, etc, packaged), { file: etc, source: 'etc' })
  const link = join(dir, 'link.yaml')
  symlinkSync(etc, link)
  t.same(resolveConfigPath(undefined, link, packaged), { file: link, source: 'etc' }, 'through a symbolic link too')
})

t.test('the packaged default only when the system file does not exist', async (t) => {
  t.same(resolveConfigPath(undefined, join(dir, 'missing.yaml'), packaged), { file: packaged, source: 'packaged' })
  t.same(resolveConfigPath(undefined, join(dir, 'no-such-dir', 'egressd.yaml'), packaged),
    { file: packaged, source: 'packaged' }, 'a missing /etc/egressd directory is the same as a missing file')
})

t.test('a directory, a device, a path through a file, a dangling link: errors naming the file', async (t) => {
  const d = join(dir, 'is-a-dir.yaml')
  mkdirSync(d)
  const e = thrown(() => resolveConfigPath(undefined, d, packaged))
  t.ok(e instanceof EgressdError)
  t.equal(e.code, 'ECONFIGPATH')
  t.equal(e.reason, 'EISDIR')
  t.equal(e.file, d)
  t.match(e.message, `${d}: cannot use configuration: is a directory`)

  t.equal(thrown(() => resolveConfigPath(undefined, '/dev/null', packaged)).reason, 'ENOTREG')

  const file = join(dir, 'plain')
  writeFileSync(file, '')
  const through = thrown(() => resolveConfigPath(undefined, join(file, 'egressd.yaml'), packaged))
  t.equal(through.reason, 'ENOTDIR')
  t.match(through.message, join(file, 'egressd.yaml'))

  const dangling = join(dir, 'dangling.yaml')
  symlinkSync(join(dir, 'gone.yaml'), dangling)
  const dl = thrown(() => resolveConfigPath(undefined, dangling, packaged))
  t.equal(dl.reason, 'ENOENT')
  t.match(dl.message, /symbolic link/)
})

t.test('an unreadable system file is an error, never a silent fallback', async (t) => {
  const sub = join(dir, 'locked')
  mkdirSync(sub, { mode: 0o755 })
  chmodSync(dir, 0o755)
  const etc = join(sub, 'egressd.yaml')
  writeFileSync(etc, 'log: {level: info}\n')
  chmodSync(etc, 0o600)
  if (process.getuid?.() !== 0) {
    chmodSync(etc, 0o000)
    const e = thrown(() => resolveConfigPath(undefined, etc, packaged))
    t.equal(e.reason, 'EACCES')
    t.match(e.message, `${etc}: cannot use configuration: permission denied`)
    return
  }
  // root reads any file, so the check runs as nobody (uid 65534) in a child process on the
  // built module (npm test builds before tap).
  const built = join(process.cwd(), 'dist', 'config', 'config-path.js')
  if (!existsSync(built)) return void t.pass(`skipped: ${built} missing (run npm run build first)`, { skip: true })
  // nobody must be able to run the node binary: under .ci/run's Node 24 pass it lives in
  // root's cache (0700 home), so fall back to a system node.
  const nodeBin = [process.execPath, '/usr/bin/node', '/usr/local/bin/node']
    .find((n) => spawnSync(n, ['--version'], { uid: 65534, gid: 65534, timeout: 20_000, cwd: '/' }).status === 0)
  if (nodeBin === undefined) return void t.pass(`skipped: no node binary that uid 65534 may run (${process.execPath} is not reachable for it)`, { skip: true })
  const script = `import { resolveConfigPath } from ${JSON.stringify(pathToFileURL(built).href)}
try { console.log(JSON.stringify(resolveConfigPath(undefined, ${JSON.stringify(etc)}, '/packaged.yaml'))) }
catch (e) { console.log(JSON.stringify({ code: e.code, reason: e.reason, message: e.message })) }`
  const r = spawnSync(nodeBin, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 20_000, cwd: '/' })
  t.equal(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout) as { code: string; reason: string; message: string }
  t.equal(out.code, 'ECONFIGPATH')
  t.equal(out.reason, 'EACCES')
  t.equal(out.message, `${etc}: cannot use configuration: permission denied`)
})
