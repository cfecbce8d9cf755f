// Signals at any time (issue #17 item 7): a SIGHUP or SIGTERM that reaches `egressd run`
// while it is still compiling its configuration must not meet Node's default action
// (exit 129/143 with no log line). The test waits until the process has installed its
// handler (SigCgt in /proc), checks that it is not ready yet (a 60 000-name policy takes
// a while to compile), and signals it then.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { freePort, startDaemon, type RunningDaemon } from '../helpers/daemon.js'

const SIGHUP = 1
const onLinux = process.platform === 'linux' ? false : 'reads /proc/PID/status (Linux only)'

function catches(pid: number, signal: number): boolean {
  try {
    const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return mask !== undefined && ((BigInt('0x' + mask) >> BigInt(signal - 1)) & 1n) === 1n
  } catch {
    return false
  }
}

async function handlerInstalled(d: RunningDaemon, signal: number): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!catches(d.proc.pid!, signal)) {
    if (Date.now() > deadline) throw new Error('the handler never appeared')
    await new Promise((r) => setTimeout(r, 2))
  }
}

async function bigConfig(): Promise<string> {
  const names = Array.from({ length: 60_000 }, (_, i) => `"h${i}.device.example"`)
  return [
    'dns:',
    `  listen: ["127.0.0.1:${await freePort()}"]`,
    '  upstreams: ["127.0.0.1:9"]',
    'sni:',
    '  listen: []',
    `allow: [${names.join(', ')}]`,
    '',
  ].join('\n')
}

t.test('SIGHUP before ready: the process lives, and the reload runs once started', { skip: onLinux }, async (t) => {
  const d = startDaemon(await bigConfig(), [], { withoutTapHooks: true })
  t.teardown(() => d.stop())
  await handlerInstalled(d, SIGHUP)
  t.notOk(d.logs.some((l) => l.msg === 'ready'), 'the handler is in place before ready')
  d.proc.kill('SIGHUP')
  await d.waitForLog('ready', 30_000)
  await d.waitForLog('configuration reloaded', 30_000)
  t.equal(d.proc.exitCode, null, 'still running')
  t.equal(await d.stop(), 0)
})

t.test('SIGTERM before ready: a clean stop with exit 0 and a log line', { skip: onLinux }, async (t) => {
  const d = startDaemon(await bigConfig(), [], { withoutTapHooks: true })
  t.teardown(() => d.stop())
  // Node itself catches SIGTERM from birth (to restore the terminal, then exit), so its
  // bit says nothing; egressd installs its SIGHUP and SIGTERM handlers in one step.
  await handlerInstalled(d, SIGHUP)
  t.notOk(d.logs.some((l) => l.msg === 'ready'), 'the handler is in place before ready')
  d.proc.kill('SIGTERM')
  t.equal(await d.exited, 0)
  t.ok(d.logs.some((l) => /^stopp/.test(String(l.msg))), 'says it stopped')
})
