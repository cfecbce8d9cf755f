import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { readMetricConditions, ROOT } from './assets.js'
import { freePort } from '../helpers/daemon.js'

// EGRESSD_CLI points at another build (the default is what `npm test` builds).
const cli = process.env.EGRESSD_CLI ?? join(ROOT, 'dist', 'cli.js')
const skip = existsSync(cli) ? false : `${cli} not built (npm run build)`

t.test('every name the rules and the dashboard use is in a real scrape of egressd', { skip }, async (t) => {
  const [dns, sni, metrics] = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), 'egressd-scrape-'))
  const file = join(dir, 'egressd.yaml')
  // The upstream is a discard port on loopback: nothing is resolved, only registered.
  writeFileSync(
    file,
    [
      `dns: { listen: ["127.0.0.1:${dns}"], upstreams: ["127.0.0.1:9"] }`,
      `sni: { listen: ["127.0.0.1:${sni}"] }`,
      `metrics: { listen: "127.0.0.1:${metrics}" }`,
      'allow: ["api.example.com"]',
      '',
    ].join('\n'),
  )
  const proc = spawn(process.execPath, [cli, 'run', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)))
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL')
  })
  const deadline = Date.now() + 15_000
  while (!/"msg":"ready"/.test(out) && Date.now() < deadline && proc.exitCode === null) await sleep(50)
  t.match(out, /"msg":"ready"/, 'the daemon is ready')

  const text = await fetch(`http://127.0.0.1:${metrics}/metrics`).then((r) => r.text())
  const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!))
  t.ok(families.size > 20, `${families.size} metric families scraped`)
  for (const [name, condition] of readMetricConditions()) {
    if (condition !== null) {
      // Conditional names must really be absent here, or the condition is wrong.
      t.notOk(families.has(name), `${name} is not in a default scrape (${condition})`)
      continue
    }
    t.ok(families.has(name), `${name} is in the scrape`)
  }
  proc.kill('SIGTERM')
  t.equal(await exited, 0, 'stopped cleanly')
})
