// `npm start` stopped with SIGTERM or SIGINT leaves no daemon behind (issue #13 item 7):
// npm signals its script's shell, and a shell that ran the daemon as a child would exit
// and leave it running; the script `exec`s the daemon so the signal reaches it.
//
// `npm start` builds first, so it runs in a copy of the checkout (the files git knows,
// node_modules linked): built in place, it rewrote dist/ while the suite's other files
// spawned dist/cli.js, and one of them once loaded a half-written module.
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { once } from 'node:events'
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const ROOT = process.cwd()
const copy = mkdtempSync(join(tmpdir(), 'egressd-npm-start-'))
t.teardown(() => rmSync(copy, { recursive: true, force: true }))
execFileSync('sh', ['-c', 'git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$1"', 'sh', copy], { cwd: ROOT })
symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'))

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const u = createSocket('udp4')
    u.once('error', () => resolve(false))
    u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)))
  })
}

const busy = (await portFree(5353)) ? false : '127.0.0.1:5353 is taken on this host (npm start listens there)'

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`npm start, then ${signal} to npm: the daemon stops too`, { skip: busy, timeout: 120_000 }, async (t) => {
    const npm = spawn('npm', ['start'], { cwd: copy, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    npm.stdout.on('data', (c: Buffer) => (out += String(c)))
    const deadline = Date.now() + 90_000
    while (!out.includes('"msg":"ready"')) {
      if (Date.now() > deadline || npm.exitCode !== null) throw new Error(`no ready line: ${out}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    t.notOk(await portFree(5353), 'the daemon holds 127.0.0.1:5353')
    const exited = once(npm, 'exit')
    npm.kill(signal)
    await exited
    let free = false
    for (let i = 0; i < 50 && !free; i++) {
      free = await portFree(5353)
      if (!free) await new Promise((r) => setTimeout(r, 100))
    }
    t.ok(free, 'port 5353 is free again: no daemon left behind')
    t.match(out, /"msg":"stopped"/, 'the daemon logged its stop')
  })
}
