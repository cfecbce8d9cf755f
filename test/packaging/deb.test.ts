import t from 'tap'
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCommand } from '../helpers/daemon.js'
import { diskKiB, freePorts, isRoot, loopbackConfig, needTool, ROOT, smoke, status, upstream, VERSION, writeTemp } from './installed.js'

/**
 * The Debian package on this machine, for real: build, lintian, `apt-get install ./…deb`,
 * the installed egressd validates its conffile and answers dig, the unit verifies, an
 * edited conffile survives a reinstall over itself and a remove, purge leaves nothing.
 * It installs into the running system, so it needs root and refuses to touch a machine
 * that already has egressd installed.
 */
// Builds and installs take longer than .taprc's 120 s per file on a loaded 2-core machine.
t.setTimeout(600_000)

const DIRS = ['/usr/lib/egressd', '/etc/egressd', '/usr/share/egressd', '/usr/share/doc/egressd']
const CONF = '/etc/egressd/egressd.yaml'
const UNIT = '/lib/systemd/system/egressd.service'

async function skipReason(): Promise<string | false> {
  if (!isRoot) return 'not root: installing a .deb needs root'
  for (const [tool, pkg] of [['dpkg-deb', 'dpkg'], ['apt-get', 'apt'], ['dig', 'dnsutils']] as const) {
    const r = await needTool(tool, pkg)
    if (r) return r
  }
  const nodejs = (await runCommand('dpkg-query', ['-W', '-f=${Version}', 'nodejs'])).stdout.trim()
  if (nodejs === '' || (await runCommand('dpkg', ['--compare-versions', nodejs, 'ge', '20'])).code !== 0) {
    return `the nodejs package is ${nodejs === '' ? 'not installed' : `version ${nodejs}`}: the .deb depends on nodejs (>= 20), and apt would not install it`
  }
  if ((await runCommand('dpkg-query', ['-W', '-f=${Status}', 'egressd'])).stdout.includes('installed')) return 'egressd is already installed on this machine: not touching it'
  const present = DIRS.filter((d) => existsSync(d))
  if (present.length > 0) return `${present.join(', ')} already exist: not touching an existing installation`
  return false
}

const skip = await skipReason()
if (skip) console.log(`# Debian package not installed: ${skip}`)

const apt = (...args: string[]) => runEnv('apt-get', ['-y', '-q', '--no-install-recommends', ...args], 240_000)

t.test('Debian package: build, lintian, install, run, upgrade over itself, remove, purge', { skip, timeout: 600_000 }, async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'egressd-deb-'))
  const built = await runEnv(join(ROOT, 'packaging', 'deb', 'build.sh'), [], 240_000, { EGRESSD_DEB_OUT: out })
  t.equal(built.code, 0, `build.sh: ${built.stderr}`)
  const deb = join(out, `egressd_${VERSION}_all.deb`)
  t.equal(built.stdout.trim(), deb)
  const size = (await runCommand('stat', ['-c', '%s', deb])).stdout.trim()
  const info = (await runCommand('dpkg-deb', ['-f', deb, 'Installed-Size', 'Depends'])).stdout
  t.match(info, /Depends: nodejs \(>= 20\)/)
  t.comment(`${deb.replace(out, '$TMP')}: ${(Number(size) / 1024).toFixed(0)} KiB; ${info.split('\n')[0]} KiB`)

  t.test('lintian: no errors (warnings listed)', { skip: await needTool('lintian', 'lintian') }, async (t) => {
    const l = await runCommand('lintian', ['--tag-display-limit', '0', deb], 300_000)
    const lines = l.stdout.split('\n').filter((x) => /^[EW]: /.test(x))
    for (const w of lines.filter((x) => x.startsWith('W: '))) t.comment(`lintian ${w}`)
    t.same(lines.filter((x) => x.startsWith('E: ')), [], 'no lintian errors')
  })

  // Whatever happens below, the machine ends without the package.
  t.teardown(async () => {
    await runEnv('dpkg', ['--purge', 'egressd'], 120_000)
  })

  const inst = await apt('install', deb)
  t.equal(inst.code, 0, `apt-get install ./deb: ${inst.stderr}`)
  for (const f of ['/usr/bin/egressd', CONF, UNIT, '/usr/share/egressd/nftables/egressd.nft', '/usr/share/egressd/systemd/egressd-nft.conf',
    '/usr/share/doc/egressd/copyright', '/usr/share/doc/egressd/changelog.gz', '/usr/share/man/man1/egressd.1.gz',
    '/usr/lib/egressd/config/presets/dt-cloud-connector.yaml', '/usr/lib/egressd/node_modules/pino/package.json']) {
    t.ok(existsSync(f), `installed: ${f}`)
  }
  t.notOk(existsSync('/usr/lib/egressd/node_modules/typescript'), 'production dependencies only')
  t.match((await runCommand('dpkg-query', ['-W', '-f=${Conffiles}', 'egressd'])).stdout, CONF, 'the configuration is a conffile')

  t.equal((await runCommand('/usr/bin/egressd', ['--version'])).stdout.trim(), VERSION, 'egressd --version')
  const valid = await runCommand('/usr/bin/egressd', ['validate', '-c', CONF])
  t.equal(valid.code, 0, `egressd validate on the installed conffile: ${valid.stderr}`)

  // Awaited: the steps below reinstall, remove and purge the package, which must not race the daemon still running here.
  await t.test('systemd-analyze verify on the installed unit', { skip: await needTool('systemd-analyze', 'systemd') }, async (t) => {
    const v = await runCommand('systemd-analyze', ['verify', UNIT])
    t.equal(v.code, 0, v.stderr)
    t.equal(v.stderr.trim(), '', 'no warnings')
  })

  await t.test('the installed code runs and answers dig', async (t) => {
    const up = await upstream()
    t.teardown(() => up.close())
    const ports = await freePorts()
    const s = await smoke('/usr/bin/egressd', ['run', '-c', writeTemp('egressd.yaml', loopbackConfig(ports, up.port))], ports)
    t.equal(s.readyz, 200)
    t.equal(status(s.allowed), 'NOERROR')
    t.equal(status(s.blocked), 'NXDOMAIN')
    const disk = await diskKiB('/usr/lib/egressd', '/usr/share/egressd', '/usr/share/doc/egressd', CONF, UNIT)
    t.comment(`footprint (Debian package, Node ${process.versions.node} at ${process.execPath}): ${(disk / 1024).toFixed(1)} MiB on disk without Node.js, idle RSS ${(s.idleRssKiB / 1024).toFixed(1)} MiB after ready, ${(s.settledRssKiB / 1024).toFixed(1)} MiB once the reload worker has exited`)
  })

  // An operator's edit must survive the package being installed over itself.
  appendFileSync(CONF, '# edited by the operator\n')
  const edited = readFileSync(CONF, 'utf8')
  const again = await runEnv('dpkg', ['-i', deb], 240_000)
  t.equal(again.code, 0, `dpkg -i over itself: ${again.stderr}`)
  t.equal(readFileSync(CONF, 'utf8'), edited, 'the edited conffile is kept')
  t.same(readdirSync('/etc/egressd').filter((f) => f !== 'egressd.yaml'), [], 'no .dpkg-new/.dpkg-dist beside it')

  const removed = await apt('remove', 'egressd')
  t.equal(removed.code, 0, removed.stderr)
  t.notOk(existsSync('/usr/lib/egressd'), 'remove: the code is gone')
  t.notOk(existsSync('/usr/bin/egressd'), 'remove: the command is gone')
  t.equal(readFileSync(CONF, 'utf8'), edited, 'remove keeps the edited configuration')

  const purged = await apt('purge', 'egressd')
  t.equal(purged.code, 0, purged.stderr)
  for (const d of DIRS) t.notOk(existsSync(d), `purge: ${d} is gone`)
  t.notMatch((await runCommand('dpkg-query', ['-W', '-f=${Status}', 'egressd'])).stdout, /installed|config-files/, 'dpkg no longer knows the package')
})

function runEnv(cmd: string, args: string[], timeoutMs: number, extra: Record<string, string> = {}) {
  return import('node:child_process').then(({ execFile }) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(cmd, args, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive', ...extra }, timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  }))
}
