import t from 'tap'
import { existsSync, mkdtempSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { runCommand } from '../helpers/daemon.js'
import { diskKiB, freePorts, loopbackConfig, needTool, ROOT, smoke, status, upstream, VERSION, writeTemp } from './installed.js'

/**
 * `npm pack` → `npm install -g` into a temporary prefix → the `egressd` on that
 * prefix's PATH validates and runs. The install resolves production dependencies
 * through npm (its cache first: `npm ci` just filled it).
 */
// Builds and installs take longer than .taprc's 120 s per file on a loaded 2-core machine.
t.setTimeout(600_000)

const noDig = await needTool('dig', 'dnsutils')

t.test('npm pack, install -g into a temp prefix, egressd --version / validate / run', { skip: noDig, timeout: 300_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'egressd-npm-'))
  const packed = await runCommand(join(ROOT, 'packaging', 'npm-pack.sh'), [join(work, 'pack')], 180_000)
  t.equal(packed.code, 0, `npm-pack.sh: ${packed.stderr}`)
  const tgz = packed.stdout.trim().split('\n').at(-1)!
  t.equal(tgz, join(work, 'pack', `egressd-${VERSION}.tgz`))

  const list = (await runCommand('tar', ['-tzf', tgz])).stdout.split('\n').filter(Boolean)
  for (const f of ['package/dist/cli.js', 'package/config/egressd.yaml', 'package/config/presets/dt-cloud-connector.yaml',
    'package/systemd/egressd.service', 'package/docs/design.md', 'package/README.md', 'package/LICENSE']) {
    t.ok(list.includes(f), `the tarball holds ${f}`)
  }
  t.notOk(list.some((f) => /^package\/(src|test|bench|node_modules|packaging)\//.test(f)), 'no sources, tests, benchmarks or node_modules')
  t.notOk(list.some((f) => f.endsWith('.map')), 'no source maps (their sources are not shipped)')

  // Under `.ci/run`'s second pass process.execPath is Node 24: the bin's `#!/usr/bin/env node` must find the same one.
  const prefix = join(work, 'prefix')
  const env = { ...process.env, PATH: `${join(prefix, 'bin')}:${dirname(process.execPath)}:${process.env.PATH ?? ''}` }
  const inst = await runCommandEnv('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tgz], env, 180_000)
  t.equal(inst.code, 0, `npm install -g: ${inst.stderr}`)
  const bin = join(prefix, 'bin', 'egressd')
  t.ok(existsSync(bin), `${bin} is on the prefix's PATH`)
  const pkgDir = join(prefix, 'lib', 'node_modules', 'egressd')
  t.notOk(existsSync(join(pkgDir, 'node_modules', 'typescript')), 'production dependencies only')
  t.ok(existsSync(join(pkgDir, 'node_modules', 'pino')), 'pino installed')

  const version = await runCommandEnv(bin, ['--version'], env)
  t.equal(version.stdout.trim(), VERSION, 'egressd --version')
  const valid = await runCommandEnv(bin, ['validate', '-c', join(pkgDir, 'config', 'egressd.yaml')], env)
  t.equal(valid.code, 0, `egressd validate on the packaged default: ${valid.stderr}`)
  t.match(valid.stdout, /valid; \d+ rules/)

  const up = await upstream()
  t.teardown(() => up.close())
  const ports = await freePorts()
  const config = writeTemp('egressd.yaml', loopbackConfig(ports, up.port))
  const s = await smoke(bin, ['run', '-c', config], ports, { env })
  t.equal(s.readyz, 200, '/readyz')
  t.equal(s.ready.version, VERSION)
  t.equal(status(s.allowed), 'NOERROR', 'an allowed name is answered')
  t.match(s.allowed, /api\.example\.com\.\s+\d+\s+IN\s+A\s+198\.51\.100\.7/)
  t.equal(status(s.blocked), 'NXDOMAIN', 'a blocked name is not')

  const disk = await diskKiB(pkgDir)
  t.comment(`footprint (npm install -g, Node ${process.versions.node}): tarball ${(statSync(tgz).size / 1024).toFixed(0)} KiB, ${(disk / 1024).toFixed(1)} MiB on disk in ${pkgDir.replace(work, '$TMP')}, idle RSS ${(s.idleRssKiB / 1024).toFixed(1)} MiB after ready, ${(s.settledRssKiB / 1024).toFixed(1)} MiB once the reload worker has exited`)
  t.ok(s.idleRssKiB > 10_000 && s.idleRssKiB < 200_000, `idle RSS ${s.idleRssKiB} KiB is plausible`)
})

/**
 * `egressd validate` with no -c, in a private mount namespace where an empty tmpfs hides
 * /etc/egressd: the deb test (run beside this file by tap) or the host may have
 * /etc/egressd/egressd.yaml, which would rightly win. Needs `unshare` and root, as CI has.
 */
async function validateWithoutEtc(): Promise<{ code: number; stdout: string; stderr: string } | string> {
  const probe = await runCommand('unshare', ['--mount', '--propagation', 'private', 'true'])
  if (probe.code !== 0) return `cannot make a private mount namespace to hide /etc/egressd (unshare: ${probe.stderr.trim() || probe.code})`
  const script = 'if [ -d /etc/egressd ]; then mount -t tmpfs none /etc/egressd || exit 99; fi; exec "$0" "$@"'
  return runCommand('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, process.execPath, join(ROOT, 'dist', 'cli.js'), 'validate'])
}

t.test('with no -c, the packaged default is used when /etc/egressd/egressd.yaml does not exist', async (t) => {
  const r = await validateWithoutEtc()
  if (typeof r === 'string') return void t.pass(`skipped: ${r}`, { skip: r })
  t.equal(r.code, 0, r.stderr)
  t.equal(/^(\S+): valid/.exec(r.stdout)?.[1], join(ROOT, 'config', 'egressd.yaml'), 'the packaged default')
})

function runCommandEnv(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000) {
  return import('node:child_process').then(({ execFile }) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  }))
}
