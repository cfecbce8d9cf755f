import t from 'tap'
import { execFile } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { writeFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import dnsPacket from 'dns-packet'
import { fakeUpstream, hasTool, query } from '../dns/helpers.js'
import { CLI, freePort, startDaemon } from '../helpers/daemon.js'

const run = promisify(execFile)

/**
 * Sends `count` queries from one socket, at most `window` outstanding, and returns
 * the rcode of each answer by query index (undefined = lost). Bounded by `deadlineMs`.
 */
async function queryLoop(port: number, names: (i: number) => string, count: number, window: number, deadlineMs: number): Promise<(string | undefined)[] & { resent?: number }> {
  const sock = createSocket('udp4')
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
  const rcodes: (string | undefined)[] & { resent?: number } = new Array(count)
  rcodes.resent = 0
  const sentAt = new Float64Array(count)
  let next = 0
  let answered = 0
  const deadline = Date.now() + deadlineMs
  return new Promise((resolve) => {
    const finish = (): void => {
      clearInterval(retry)
      sock.close()
      resolve(rcodes)
    }
    const send = (i: number): void => {
      sentAt[i] = Date.now()
      sock.send(query(names(i), 'A', { id: i & 0xffff }), port, '127.0.0.1')
    }
    const pump = (): void => {
      while (next < count && next - answered < window) send(next++)
      if (answered === count || Date.now() > deadline) finish()
    }
    sock.on('message', (msg) => {
      const id = msg.readUInt16BE(0)
      // ids wrap at 65 536; the window keeps at most one query per id outstanding.
      for (let i = answered; i < next; i++) {
        if ((i & 0xffff) === id && rcodes[i] === undefined) {
          rcodes[i] = (dnsPacket.decode(msg) as { rcode?: string }).rcode ?? 'NOERROR'
          while (answered < next && rcodes[answered] !== undefined) answered++
          break
        }
      }
      pump()
    })
    // A datagram dropped by a full socket buffer on a loaded machine is resent after
    // 300 ms, like a stub resolver would; resends are counted for the assertions.
    const retry = setInterval(() => {
      for (let i = answered; i < next; i++) {
        if (rcodes[i] === undefined && Date.now() - sentAt[i]! > 300) {
          rcodes.resent!++
          send(i)
        }
      }
      pump()
    }, 50)
    pump()
  })
}

/** Waits for `done`; on timeout the error carries `explain()` (what the daemon last said), so a failure in CI can be read. */
async function until(done: () => boolean, timeoutMs: number, explain: () => string = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`condition not reached in ${timeoutMs} ms ${explain()}`)
    await sleep(10)
  }
}

async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
}

async function setup(t: { teardown(fn: () => unknown): void }, extra: string[] = []) {
  const upstream = await fakeUpstream(async (q) => {
    if (q.name.startsWith('slow.')) await sleep(400)
    return { answers: [{ name: q.name, type: 'A', ttl: 300, data: '198.51.100.7' }] as never }
  })
  t.teardown(() => upstream.close())
  const [dnsPort, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const config = (allow: string[]) => [
    `dns: { listen: ["127.0.0.1:${dnsPort}"], upstreams: ["127.0.0.1:${upstream.port}"], rate_limit: { qps: 0 } }`,
    `sni: { listen: ["127.0.0.1:${sniPort}"], shutdown_grace_ms: 1000 }`,
    `metrics: { listen: "127.0.0.1:${metricsPort}", blocked_names_max: 50 }`,
    ...extra,
    `allow: [${allow.map((a) => JSON.stringify(a)).join(', ')}]`,
    '',
  ].join('\n')
  // Without tap's module hooks in the daemon, as in production: they follow every thread
  // the daemon starts, and Node's customization-hooks thread has known deadlocks with
  // worker threads (nodejs/node#50948, #53182). One CI run in five on Node 24 saw a
  // reload never finish under them (issue #17 note); nothing else here needs them.
  const d = startDaemon(config(['*.allowed.example', 'slow.example']), [], { withoutTapHooks: true })
  t.teardown(() => d.stop())
  await d.waitForLog('ready')
  return { d, dnsPort, metricsPort, config }
}

t.test('50 reloads during a query loop: no answer lost or failed', async (t) => {
  const { d, dnsPort, config } = await setup(t)
  const names = (i: number) => (i % 2 === 0 ? `h${i % 7}.allowed.example` : `x${i}.blocked.example`)
  const loop = queryLoop(dnsPort, names, 6000, 16, 60_000)
  for (let k = 0; k < 50; k++) {
    // Both variants keep the queried verdicts; they differ in an unrelated name.
    writeFileSync(d.file, config(['*.allowed.example', 'slow.example', `v${k}.unrelated.example`]))
    d.proc.kill('SIGHUP')
    await until(() => d.logs.filter((l) => l.msg === 'configuration reloaded').length > k, 10_000, () =>
      `(reload ${k + 1}; daemon exit code ${d.proc.exitCode}; last log lines: ${JSON.stringify(d.logs.slice(-4))}; stderr: ${d.stderr().slice(-500)})`)
  }
  const rcodes = await loop
  const reloads = d.logs.filter((l) => l.msg === 'configuration reloaded').length
  t.equal(reloads, 50, '50 reloads applied')
  const lost = rcodes.filter((r) => r === undefined).length
  const wrong = rcodes.filter((r, i) => r !== undefined && r !== (i % 2 === 0 ? 'NOERROR' : 'NXDOMAIN')).length
  t.equal(lost, 0, 'no query lost')
  t.equal(wrong, 0, 'no answer changed or failed')
})

t.test('`egressd reload -c FILE` validates, then signals the daemon on that file', async (t) => {
  const { d, config } = await setup(t)
  writeFileSync(d.file, config(['*.allowed.example', 'new.example']))
  const ok = await run(process.execPath, [CLI, 'reload', '-c', d.file])
  t.match(ok.stdout, new RegExp(`sent SIGHUP to ${d.proc.pid}`))
  await d.waitForLog('configuration reloaded')

  writeFileSync(d.file, config(['a.*.example']))
  const bad = await run(process.execPath, [CLI, 'reload', '-c', d.file]).then(() => null, (e: { code: number; stderr: string }) => e)
  t.equal(bad?.code, 2, 'a bad file is not sent')
  t.match(bad?.stderr, /egressd\.yaml:\d+:\d+: allow: "a\.\*\.example"/)
  await sleep(200)
  t.equal(d.logs.filter((l) => /reload/.test(l.msg)).length, 1, 'the daemon saw no second reload')
})

t.test('100 000 distinct blocked names keep blocked_total bounded', async (t) => {
  const { dnsPort, metricsPort } = await setup(t)
  const n = Number(process.env.FLOOD_N ?? 100_000)
  const started = Date.now()
  const rcodes = await queryLoop(dnsPort, (i) => `n${i}.flood.example`, n, 64, 90_000)
  t.equal(rcodes.filter((r) => r === 'NXDOMAIN').length, n, `every flood query answered NXDOMAIN (${Date.now() - started} ms)`)
  const text = await scrape(metricsPort)
  const series = text.split('\n').filter((l) => l.startsWith('egressd_blocked_total{'))
  t.ok(series.length <= 52, `${series.length} series for ${n} names (cap 50 + _other per protocol)`)
  const total = series.reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
  // A resent query is a second blocked query; nothing is lost from the counts.
  t.ok(total >= n && total <= n + rcodes.resent!, `${total} blocked counted for ${n} names and ${rcodes.resent} resends: the oldest names fold into _other`)
  t.match(text, new RegExp(`egressd_blocked_total\\{protocol="dns",name="n${n - 1}\\.flood\\.example"\\} [12]`), 'the newest names keep their series')
})

const noPromtool = (await hasTool('promtool')) ? false : 'promtool not installed (Debian prometheus); .ci/run installs it'

t.test('a real scrape passes promtool check metrics', { skip: noPromtool }, async (t) => {
  const { dnsPort, metricsPort } = await setup(t)
  await queryLoop(dnsPort, (i) => (i % 2 ? `a${i}.allowed.example` : `b${i}.blocked.example`), 20, 4, 10_000)
  const text = await scrape(metricsPort)
  const child = execFile('promtool', ['check', 'metrics'], { timeout: 20_000 }, () => {})
  const out: string[] = []
  child.stdout!.on('data', (b) => out.push(String(b)))
  child.stderr!.on('data', (b) => out.push(String(b)))
  child.stdin!.end(text)
  const code = await new Promise<number | null>((r) => child.once('exit', r))
  t.equal(code, 0, out.join(''))
})

t.test('SIGTERM answers the query in flight, then exits 0', async (t) => {
  const { d, dnsPort } = await setup(t)
  const answer = queryLoop(dnsPort, () => 'slow.example', 1, 1, 5_000)
  await sleep(100) // the query is now waiting on the 400 ms upstream
  d.proc.kill('SIGTERM')
  t.same(await answer, ['NOERROR'], 'the in-flight query got its answer')
  t.equal(await d.exited, 0)
  const order = d.logs.map((l) => l.msg)
  t.ok(order.indexOf('stopping') < order.indexOf('stopped'))
})
