import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, freePort, runCommand } from '../helpers/daemon.js'
import { watchJsonLines } from '../helpers/json-process.js'

/**
 * The built CLI without -c, against the real /etc/egressd/egressd.yaml (the path is
 * fixed, so it cannot be pointed elsewhere): each case runs in a private mount
 * namespace whose /etc is an overlay on a scratch directory, so the case can create,
 * lock or replace /etc/egressd while the host's /etc stays untouched. Issue #11, "Bad
 * input": a missing file falls back to the packaged default, an unusable one is an
 * error naming it, for run, check and validate alike; the ready line names the file.
 * Needs root (mount namespaces, overlayfs).
 */
const ETC = '/etc/egressd/egressd.yaml'

/** A node binary uid 65534 may run (process.execPath may sit in root's 0700 cache). */
const nodeForNobody = [process.execPath, '/usr/bin/node', '/usr/local/bin/node']
  .find((n) => spawnSync(n, ['--version'], { uid: 65534, gid: 65534, timeout: 20_000, cwd: '/' }).status === 0)

async function skipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'not root: needs a mount namespace with an overlay on /etc'
  const probe = await runCommand('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', overlay(scratch()) + 'true'])
  return probe.code === 0 ? false : `cannot overlay /etc in a private mount namespace (unshare: ${probe.stderr.trim() || probe.code})`
}

const scratches: string[] = []
function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'egressd-etc-'))
  scratches.push(d)
  return d
}
t.teardown(() => scratches.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** Shell that makes /etc writable privately: an overlay with its upper layer in `dir`. */
function overlay(dir: string): string {
  return `mkdir -p ${dir}/u ${dir}/w && mount -t overlay overlay -o lowerdir=/etc,upperdir=${dir}/u,workdir=${dir}/w /etc || exit 99; `
}

/** `setup` (shell, run as root inside the namespace), then the CLI with `args`, as root or as nobody. */
function argv(setup: string, args: string[], asNobody = false): string[] {
  // tap's hooks (NODE_OPTIONS) would follow the child and, as nobody, fail to write coverage.
  const exec = asNobody
    ? `exec setpriv --reuid=65534 --regid=65534 --clear-groups env -u NODE_OPTIONS -u NODE_V8_COVERAGE "$0" "$@"`
    : `exec env -u NODE_OPTIONS -u NODE_V8_COVERAGE "$0" "$@"`
  const node = asNobody ? nodeForNobody! : process.execPath
  return ['--mount', '--propagation', 'private', 'sh', '-c', overlay(scratch()) + setup + '; ' + exec, node, CLI, ...args]
}

const cli = (setup: string, args: string[], asNobody = false) => runCommand('unshare', argv(setup, args, asNobody), 30_000)

async function loopbackConfig(): Promise<string> {
  const [dns, sni, metrics] = [await freePort(), await freePort(), await freePort()]
  return `dns: {listen: ["127.0.0.1:${dns}"], upstreams: ["127.0.0.1:9"]}\nsni: {listen: ["127.0.0.1:${sni}"]}\nmetrics: {listen: "127.0.0.1:${metrics}"}\nallow: [etc.example.com]\n`
}
const writeEtc = (yaml: string) => `mkdir -p /etc/egressd && printf '%s' '${yaml}' > ${ETC}`

const skip = await skipReason()

t.test('no /etc/egressd: validate and check use the packaged default', { skip }, async (t) => {
  const r = await cli('rm -rf /etc/egressd', ['validate'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /config\/egressd\.yaml: valid/)
  const c = await cli('rm -rf /etc/egressd', ['check', 'ccon-manager.prod.disruptive-technologies.com'])
  t.equal(c.code, 0, `the default preset allows it: ${c.stderr}`)
})

t.test('/etc/egressd/egressd.yaml exists: validate, check and run use it, and the ready line names it', { skip }, async (t) => {
  const setup = writeEtc(await loopbackConfig())
  const v = await cli(setup, ['validate'])
  t.equal(v.code, 0, v.stderr)
  t.match(v.stdout, `${ETC}: valid`)
  t.equal((await cli(setup, ['check', 'etc.example.com'])).code, 0, 'a name only /etc\'s file allows')
  t.equal((await cli(setup, ['check', 'ccon-manager.prod.disruptive-technologies.com'])).code, 1, 'the packaged default is not read')

  const proc = spawn('unshare', argv(setup, ['run']), { stdio: ['ignore', 'pipe', 'pipe'] })
  const j = watchJsonLines(proc, false)
  try {
    const ready = await j.waitFor((l) => l.msg === 'ready', 'log "ready"', 30_000)
    t.equal(ready.config, ETC, 'the ready line names the file in use')
  } finally {
    t.equal(await j.stop(10_000), 0, 'SIGTERM: exit 0')
  }
})

t.test('an unusable /etc/egressd/egressd.yaml is an error naming it, never a fallback', { skip }, async (t) => {
  for (const cmd of [['validate'], ['check', 'example.com'], ['run']]) {
    const r = await cli(`mkdir -p ${ETC}`, cmd)
    t.equal(r.code, 2, `${cmd[0]} on a directory: exit 2`)
    t.equal(r.stderr, `egressd ${cmd[0]}: ${ETC}: cannot use configuration: is a directory\n`)
    t.equal(r.stdout, '', 'nothing started or validated')
  }
  const dangling = await cli(`mkdir -p /etc/egressd && ln -s /nonexistent.yaml ${ETC}`, ['validate'])
  t.equal(dangling.code, 2)
  t.match(dangling.stderr, `${ETC}: cannot use configuration: a symbolic link to a file that does not exist`)

  if (nodeForNobody === undefined) return void t.pass('skipped: no node binary uid 65534 may run', { skip: true })
  const locked = `${writeEtc(await loopbackConfig())} && chmod 0600 ${ETC}`
  for (const cmd of [['validate'], ['run']]) {
    const r = await cli(locked, cmd, true)
    t.equal(r.code, 2, `${cmd[0]} as nobody on a 0600 root file: exit 2 (${r.stderr})`)
    t.equal(r.stderr, `egressd ${cmd[0]}: ${ETC}: cannot use configuration: permission denied\n`)
  }
  // The same file readable: nobody runs validate on it (the refusal above was the mode, not the set-up).
  const readable = await cli(`${writeEtc(await loopbackConfig())} && chmod 0644 ${ETC}`, ['validate'], true)
  t.equal(readable.code, 0, readable.stderr)
})
