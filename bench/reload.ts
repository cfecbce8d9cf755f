/**
 * `npm run bench -- reload [--rules 100000] [--reloads 20] [--qps 3000] [--cli dist/cli.js]`:
 * queries lost and latency while the daemon reloads a large policy (issue #17, item 6).
 *
 * Spawns `egressd run` (the built CLI, or --cli for another build) on a policy of RULES
 * entries, with the in-process fake upstream of bench/dns/fake-upstream.ts behind it, and
 * sends QPS queries/s over UDP from this process: half blocked names (answered by the
 * policy), half allowed names (cache hits after their first miss). Meanwhile it rewrites
 * the file (alternating between two policies that differ in one entry, so every reload
 * compiles) and sends SIGHUP, RELOADS times, waiting for each "configuration reloaded" line
 * (bounded: 120 s each). A query is lost when no answer came within 2 s. Prints lost
 * queries and latency percentiles over the whole run and over the reload windows.
 * `--no-reload` runs the same timeline without reloading: the machine's own share.
 */
import { spawn } from 'node:child_process'
import dgram from 'node:dgram'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { allowedNames, blockedNames, egressdAllowYaml, makeRules } from './dns/corpus.js'
import { startFakeUpstream } from './dns/fake-upstream.js'

function flag(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name)
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback
}

function encodeQuery(id: number, name: string): Buffer {
  const parts: Buffer[] = [Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])]
  for (const l of name.split('.')) parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'))
  parts.push(Buffer.from([0, 0, 1, 0, 1]))
  return Buffer.concat(parts)
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

export interface ReloadResult {
  rules: number
  reloads: number
  qps: number
  sent: number
  lost: number
  p50ms: number
  p99ms: number
  maxms: number
  duringReloadSent: number
  duringReloadLost: number
  duringReloadP99ms: number
  reloadSeconds: { median: number; max: number }
  /**
   * Datagrams the kernel dropped for a full receive buffer during the run (the `drops`
   * column of /proc/net/udp): at the daemon's socket (its event loop fell behind) and at
   * this process's own socket (the bench fell behind: not the daemon's loss).
   */
  kernelDrops: { daemon: number; bench: number }
  /**
   * The daemon's own event-loop delay (prom-client's nodejs_eventloop_lag_max_seconds,
   * scraped every second; each scrape covers the second before it), in ms: the largest
   * outside and during the reload windows. Latency seen by the bench includes the bench's
   * own delays on a loaded machine; this does not.
   */
  daemonLoopLagMaxMs: { outside: number; duringReload: number }
  /** The daemon's own figure for its event loop's share of each reload (`apply_ms` in its log line). */
  applyMs: { median: number; max: number }
}

async function scrapeLoopLagMs(port: number): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text)
    return m === null ? NaN : Number(m[1]) * 1000
  } catch {
    return NaN
  }
}

/** The `drops` column of /proc/net/udp for the IPv4 socket bound to 127.0.0.1:port (0 when not found). */
function udpDrops(port: number): number {
  const want = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  try {
    for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n')) {
      const cols = line.trim().split(/\s+/)
      if (cols[1] === want) return Number(cols[cols.length - 1])
    }
  } catch {
    // Not Linux: no counter to read.
  }
  return 0
}

export async function run(args: string[]): Promise<void> {
  const rulesCount = Number(flag(args, '--rules', '100000'))
  const reloads = Number(flag(args, '--reloads', '20'))
  const qps = Number(flag(args, '--qps', '3000'))
  const cli = flag(args, '--cli', fileURLToPath(new URL('../../dist/cli.js', import.meta.url)))
  const idle = args.includes('--no-reload')
  const groups = Number(flag(args, '--groups', rulesCount > 120_000 ? String(Math.ceil(rulesCount / 120_000)) : '1'))
  const r = await measure(cli, rulesCount, reloads, qps, idle, groups)
  process.stdout.write(JSON.stringify({ bench: 'reload', cli, idle, loadavg: loadavg().map((x) => Math.round(x * 10) / 10), ...r }) + '\n')
  process.stdout.write(
    `${r.rules} rules, ${r.reloads} reloads at ${r.qps} qps: sent ${r.sent}, lost ${r.lost}; p50 ${r.p50ms} ms, p99 ${r.p99ms} ms, max ${r.maxms} ms; ` +
      `during reloads: sent ${r.duringReloadSent}, lost ${r.duringReloadLost}, p99 ${r.duringReloadP99ms} ms; reload took median ${r.reloadSeconds.median} s, max ${r.reloadSeconds.max} s; ` +
      `kernel drops: daemon socket ${r.kernelDrops.daemon}, bench socket ${r.kernelDrops.bench}; ` +
      `daemon event-loop delay max: ${r.daemonLoopLagMaxMs.outside} ms outside reloads, ${r.daemonLoopLagMaxMs.duringReload} ms during; ` +
      `event-loop share of a reload (apply_ms): median ${r.applyMs.median} ms, max ${r.applyMs.max} ms\n`,
  )
}

/** `idle`: the same timeline without SIGHUP (4 s per "reload"): what the machine's load alone costs. */
/**
 * `groups` > 1 spreads the rules over that many lists (the default group's and named
 * groups' for 10.G.0.0/16): one list of more than ~125 000 entries does not load today
 * (issue #17, item 11: a spread into push overflows the stack), so 1 M rules are 9 lists.
 * The queries come from 127.0.0.1, the default group.
 */
async function measure(cli: string, rulesCount: number, reloads: number, qps: number, idle: boolean, groups: number): Promise<ReloadResult> {
  const up = await startFakeUpstream()
  const dir = mkdtempSync(join(tmpdir(), 'egressd-reload-bench-'))
  const file = join(dir, 'egressd.yaml')
  const rules = makeRules(rulesCount)
  const chunk = Math.ceil(rules.length / groups)
  const body = egressdAllowYaml(rules.slice(0, chunk))
  let groupsYaml = ''
  if (groups > 1) {
    groupsYaml = 'groups:\n'
    for (let g = 1; g < groups; g++) {
      const part = rules.slice(g * chunk, (g + 1) * chunk)
      groupsYaml += `  - name: g${g}\n    clients: ["10.${g}.0.0/16"]\n    allow:\n` + egressdAllowYaml(part).replace(/^ {2}- /gm, '      - ')
    }
  }
  const port = 20000 + Math.floor(Math.random() * 20000)
  const head = (variant: number) => `dns:
  listen: ["127.0.0.1:${port}"]
  upstreams: ["127.0.0.1:${up.port}"]
  rebind_protection: false
  rate_limit: { qps: 0 }
sni:
  listen: []
metrics:
  listen: "127.0.0.1:${port + 1}"
log:
  level: info
allow:
  - "variant${variant}.reload.example"
`
  writeFileSync(file, head(0) + body + groupsYaml)
  // 1 M entries are ~38 MB of YAML, over the default 16 MiB file limit (docs/configuration.md).
  const env = { ...process.env, EGRESSD_MAX_CONFIG_BYTES: String(256 * 1024 * 1024) }
  const proc = spawn(process.execPath, [cli, 'run', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'], env })
  const exited = new Promise((r) => proc.once('exit', r))
  const waiters: { msg: string; resolve: (line: Record<string, unknown>) => void }[] = []
  let partial = ''
  const tail: string[] = []
  proc.stdout.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n')
    partial = parts.pop()!
    for (const l of parts) {
      tail.push(l)
      if (tail.length > 20) tail.shift()
      let line: Record<string, unknown>
      try {
        line = JSON.parse(l) as Record<string, unknown>
      } catch {
        continue
      }
      for (const w of [...waiters]) {
        if (line.msg === w.msg || (w.msg === 'reload failed; the running configuration stays' && line.level === 'error')) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(line)
        }
      }
    }
  })
  proc.stderr.on('data', (d: Buffer) => tail.push(d.toString()))
  const waitFor = (msg: string, ms: number): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "${msg}" within ${ms} ms: ${tail.join('\n')}`)), ms)
      waiters.push({
        msg,
        resolve: (l) => {
          clearTimeout(timer)
          resolve(l)
        },
      })
    })
  try {
    await waitFor('ready', 180_000)
    // The bench's own socket gets the daemon's 4 MiB buffer (src/dns/server.ts): at load
    // 10 on this VM the default 208 KiB dropped 438 answers in one run, all at this socket
    // and none at the daemon's (kernelDrops), which counted as the daemon's losses.
    const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 })
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()))
    const benchPort = sock.address().port
    const drops0 = { daemon: udpDrops(port), bench: udpDrops(benchPort) }
    const names = [...blockedNames(500), ...allowedNames(rules.slice(0, chunk), 500)]
    const sentAt = new Float64Array(65536)
    const inReload = new Uint8Array(65536)
    const latencies: number[] = []
    const reloadLatencies: number[] = []
    let sent = 0
    let lost = 0
    let reloadSent = 0
    let reloadLost = 0
    let reloading = false
    sock.on('message', (msg) => {
      const id = (msg[0]! << 8) | msg[1]!
      const t0 = sentAt[id]!
      if (t0 === 0) return
      const ms = performance.now() - t0
      sentAt[id] = 0
      latencies.push(ms)
      if (inReload[id] === 1) reloadLatencies.push(ms)
    })
    // Paced in 10 ms ticks; an ID is reused 65 536 queries later (~22 s at 3 000 qps),
    // long after its 2 s deadline: an unanswered one is counted lost then.
    const perTick = qps / 100
    let carry = 0
    const started = performance.now()
    const tick = setInterval(() => {
      const due = (performance.now() - started) * (qps / 1000) - sent + carry
      const n = Math.min(Math.floor(due), perTick * 5)
      carry = 0
      for (let i = 0; i < n; i++) {
        const id = sent & 0xffff
        if (sentAt[id] !== 0) {
          lost++
          if (inReload[id] === 1) reloadLost++
        }
        sentAt[id] = performance.now()
        inReload[id] = reloading ? 1 : 0
        if (reloading) reloadSent++
        sock.send(encodeQuery(id, names[sent % names.length]!), port, '127.0.0.1')
        sent++
      }
    }, 10)
    const lag = { outside: 0, duringReload: 0 }
    let scraping = true
    const scraper = (async () => {
      while (scraping) {
        await new Promise((r) => setTimeout(r, 1000))
        const wasReloading = reloading
        const ms = await scrapeLoopLagMs(port + 1)
        if (!Number.isFinite(ms)) continue
        if (wasReloading || reloading) lag.duringReload = Math.max(lag.duringReload, ms)
        else lag.outside = Math.max(lag.outside, ms)
      }
    })()
    await new Promise((r) => setTimeout(r, 2000))
    const reloadSeconds: number[] = []
    const applyMs: number[] = []
    for (let i = 1; i <= reloads; i++) {
      writeFileSync(file, head(i % 2) + body + groupsYaml)
      const t0 = performance.now()
      reloading = true
      if (idle) await new Promise((r) => setTimeout(r, 4000))
      else {
        const done = waitFor('configuration reloaded', 120_000)
        proc.kill('SIGHUP')
        const line = await done
        if (typeof line.apply_ms === 'number') applyMs.push(line.apply_ms)
      }
      reloadSeconds.push((performance.now() - t0) / 1000)
      // Queries sent up to 2 s after the swap still count as "during".
      await new Promise((r) => setTimeout(r, 2000))
      reloading = false
      await new Promise((r) => setTimeout(r, 500))
    }
    clearInterval(tick)
    scraping = false
    await scraper
    await new Promise((r) => setTimeout(r, 2100))
    for (let id = 0; id < 65536; id++) {
      if (sentAt[id] !== 0) {
        lost++
        if (inReload[id] === 1) reloadLost++
      }
    }
    const kernelDrops = { daemon: udpDrops(port) - drops0.daemon, bench: udpDrops(benchPort) - drops0.bench }
    sock.close()
    latencies.sort((a, b) => a - b)
    reloadLatencies.sort((a, b) => a - b)
    reloadSeconds.sort((a, b) => a - b)
    const round = (x: number) => Math.round(x * 100) / 100
    return {
      rules: rulesCount,
      reloads,
      qps,
      sent,
      lost,
      p50ms: round(percentile(latencies, 50)),
      p99ms: round(percentile(latencies, 99)),
      maxms: round(latencies[latencies.length - 1] ?? NaN),
      duringReloadSent: reloadSent,
      duringReloadLost: reloadLost,
      duringReloadP99ms: round(percentile(reloadLatencies, 99)),
      reloadSeconds: { median: round(percentile(reloadSeconds, 50)), max: round(reloadSeconds[reloadSeconds.length - 1] ?? NaN) },
      kernelDrops,
      daemonLoopLagMaxMs: { outside: round(lag.outside), duringReload: round(lag.duringReload) },
      applyMs: { median: round(percentile(applyMs.sort((a, b) => a - b), 50)), max: round(applyMs[applyMs.length - 1] ?? NaN) },
    }
  } finally {
    proc.kill('SIGTERM')
    const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
    // A daemon that already exited (a refused file) emits no second 'exit': wait on the first.
    await exited
    clearTimeout(killer)
    await up.stop()
  }
}
