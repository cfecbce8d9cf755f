/**
 * `npm run bench -- dns [--quick]`: egressd against dnsmasq under dnsperf.
 *
 * Both servers get the same allow-only rule set (egressd's allow list; dnsmasq's
 * `address=/#/` plus one `server=` per rule), the same fake upstream on loopback, and the
 * same core (taskset, default core 0); dnsperf, the fake upstream and this process share
 * the other core. Both servers run side by side and their runs alternate (egressd then
 * dnsmasq, then dnsmasq then egressd: ABBA), each server's best round counting, so load
 * from other work on the machine falls on both alike, not on whichever ran later.
 * Workloads, each at 10 and 10 000 rules:
 *   blocked  10 000 distinct names under no rule, cycled → NXDOMAIN
 *   hit      1 000 allowed names, cache warmed first → NOERROR from the cache
 *   miss     distinct names under `*.bench.example`, each sent once → forwarded
 * Beside QPS, each run reports the server's CPU time per query (from /proc, all threads)
 * and how long it sat waiting for its core: on a shared machine QPS measures the share of
 * the core a server got, CPU per query what it costs. A third server, the fake upstream
 * in NXDOMAIN mode on the servers' core, is the floor of any Node dgram server (receive,
 * copy, send) for the blocked workload.
 * Then: the p99 latency at 80 % of egressd's own peak QPS (dnsperf -Q; percentiles from
 * dnsperf -v's per-response latencies, since dnsperf 2.10 prints only the average), both
 * servers at the same rate; and egressd's RSS across up to 1 M distinct allowed names.
 * Every dnsperf run is checked: response codes (and, for egressd, its blocked, cache-hit
 * and cache-miss counters) must match the workload; every server is probed and its answers
 * decoded in full before its runs. A wrong answer exits 1; a failed bar is a result.
 *
 * Options: --quick (2 s runs, 1 round, 200 k names for RSS), --seconds N, --rounds N,
 * --rules 10,10000, --outstanding N (dnsperf -q, default 100), --rss-names N,
 * --rss-seconds N (time limit of the RSS run, default 120), --no-rss, --no-latency,
 * --profile blocked|hit|miss (a separate egressd run under --cpu-prof, top frames),
 * --server-cpu N, --client-cpu N, --cli PATH (an egressd cli.js to run instead of a private
 * build of src/), --no-build (run the tree's dist/cli.js),
 * --nice N (servers, dnsperf and the upstream at niceness N, e.g. -10, so that other work
 * on a shared machine takes fewer of their time slices; negative N needs root).
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { allowedNames, blockedNames, makeRules, writeMissFile, writeQueryFile, type Rule } from './dns/corpus.js'
import { topFrames } from './dns/cpu-profile.js'
import { runDnsperf, type DnsperfResult } from './dns/dnsperf.js'
import { ANSWER_A } from './dns/fake-upstream.js'
import { setNiceness } from './dns/pin.js'
import { checkAnswer, probe } from './dns/probe.js'
import {
  freePort,
  metric,
  scrape,
  startDnsmasq,
  startEgressd,
  startFakeUpstream,
  EGRESSD_CACHE_BYTES,
  EGRESSD_CACHE_ENTRIES,
  type Managed,
} from './dns/servers.js'

type Workload = 'blocked' | 'hit' | 'miss'
type ServerName = 'dnsmasq' | 'egressd' | 'node-floor'
const WORKLOADS: readonly Workload[] = ['blocked', 'hit', 'miss']
const ANSWER = ANSWER_A.join('.')
const HIT_NAMES = 1_000
const BLOCKED_NAMES = 10_000
/** Lost queries above this share of those sent flag a run as lossy (reported, not fatal). */
const LOSS_TOLERANCE = 0.001
/**
 * A rate every server here sustains with its core mostly idle: p99 at this rate is the
 * latency floor of the machine as it is (scheduler included), to read the 80 % figures by.
 */
const LOW_RATE = 1_000
/** A server that waited for its core longer than this share of a run was measured for its CPU share. */
const STARVED_LIMIT = 0.2

interface Options {
  seconds: number
  rounds: number
  rules: number[]
  outstanding: number
  rssNames: number
  rssSeconds: number
  rss: boolean
  latency: boolean
  profile: Workload | null
  serverCpu: string
  clientCpu: string
  cli: string | null
  build: boolean
  nice: number | null
}

function parseOptions(args: string[]): Options {
  const quick = args.includes('--quick')
  const value = (name: string): string | undefined => {
    const i = args.indexOf(name)
    return i >= 0 ? args[i + 1] : undefined
  }
  const cores = availableParallelism()
  const profile = value('--profile')
  if (profile !== undefined && !WORKLOADS.includes(profile as Workload)) throw new Error(`--profile takes ${WORKLOADS.join('|')}`)
  return {
    seconds: Number(value('--seconds') ?? (quick ? 2 : 3)),
    rounds: Number(value('--rounds') ?? (quick ? 1 : 2)),
    rules: (value('--rules') ?? '10,10000').split(',').map(Number),
    outstanding: Number(value('--outstanding') ?? 100),
    rssNames: Number(value('--rss-names') ?? (quick ? 200_000 : 1_000_000)),
    rssSeconds: Number(value('--rss-seconds') ?? (quick ? 30 : 120)),
    rss: !args.includes('--no-rss'),
    latency: !args.includes('--no-latency'),
    profile: (profile as Workload | undefined) ?? null,
    serverCpu: value('--server-cpu') ?? '0',
    clientCpu: value('--client-cpu') ?? (cores > 1 ? '1' : '0'),
    cli: value('--cli') ?? null,
    build: !args.includes('--no-build'),
    nice: value('--nice') !== undefined ? Number(value('--nice')) : null,
  }
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string }
    return (err.stdout ?? '') + (err.stderr ?? '')
  }
}

function have(tool: string): boolean {
  return sh('sh', ['-c', `command -v ${tool} || true`]).trim() !== ''
}

/** dnsperf and dnsmasq come from Debian; installed here only when missing and root. */
function ensureTools(): void {
  const missing = ['dnsperf', 'dnsmasq', 'taskset'].filter((t) => !have(t))
  if (missing.length === 0) return
  if (process.getuid?.() !== 0) throw new Error(`missing ${missing.join(', ')}: apt-get install dnsperf dnsmasq-base util-linux`)
  process.stderr.write(`installing ${missing.join(', ')} with apt-get\n`)
  execFileSync('apt-get', ['update'], { stdio: 'inherit' })
  execFileSync('apt-get', ['install', '-y', 'dnsperf', 'dnsmasq-base'], { stdio: 'inherit' })
}

/**
 * Compiles src/ into a private copy of egressd under `dir` and returns its cli.js. Others
 * rebuild dist/ in the same tree at any time; a daemon started from dist/ could load half
 * of an old build and half of a new one. `--cli PATH` skips this; `--no-build` uses dist/.
 */
function buildSnapshot(o: Options, dir: string): string {
  const root = fileURLToPath(new URL('../../', import.meta.url))
  const dist = join(root, 'dist', 'cli.js')
  if (o.cli !== null) return o.cli
  if (!o.build) return dist
  const home = join(dir, 'egressd')
  mkdirSync(home)
  copyFileSync(join(root, 'package.json'), join(home, 'package.json'))
  // cli.js reads ../package.json and the presets from ../config; packages resolve upwards.
  symlinkSync(join(root, 'config'), join(home, 'config'))
  symlinkSync(join(root, 'node_modules'), join(home, 'node_modules'))
  try {
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(home, 'dist')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
  } catch (e) {
    const out = String((e as { stdout?: Buffer }).stdout ?? '')
    process.stderr.write(`tsc reported errors building egressd (measuring what it emitted):\n${out.split('\n').slice(0, 10).join('\n')}\n`)
  }
  return join(home, 'dist', 'cli.js')
}

function environment(o: Options): Record<string, string | number> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8')
  return {
    date: new Date().toISOString(),
    // Not availableParallelism(): this process pins itself to one core.
    nproc: cpus().length,
    loadavg_1m: Math.round(loadavg()[0]! * 100) / 100,
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    node: process.version,
    dnsmasq: /Dnsmasq version (\S+)/.exec(sh('dnsmasq', ['--version']))?.[1] ?? 'unknown',
    dnsperf: /Version (\S+)/.exec(sh('dnsperf', ['-H']))?.[1] ?? 'unknown',
    server_cpu: o.serverCpu,
    client_cpu: o.clientCpu,
    seconds: o.seconds,
    rounds: o.rounds,
    outstanding: o.outstanding,
    nice: o.nice ?? 0,
  }
}

/** JSON lines go to stdout as they are measured; the table follows at the end. */
function emit(row: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'dns', ...row }) + '\n')
}

const EXPECT: Record<Workload, string> = { blocked: 'NXDOMAIN', hit: 'NOERROR', miss: 'NOERROR' }

/** What dnsperf's own counts say is wrong with a run: wrong response codes, nothing done. */
function problemsOf(w: Workload, r: DnsperfResult): string[] {
  const problems: string[] = []
  if (!(r.completed > 0)) problems.push('no query completed')
  for (const [code, n] of Object.entries(r.rcodes)) {
    if (code !== EXPECT[w]) problems.push(`${n} ${code} answers (expected ${EXPECT[w]})`)
  }
  return problems
}

interface Measured {
  server: ServerName
  rules: number
  workload: Workload
  result: DnsperfResult
  problems: string[]
  lossy: boolean
  /** dnsperf -Q, for latency runs. */
  rate?: number
  round: number
  /** The machine's 1-minute load average when the run ended: other work on the box. */
  load: number
  /**
   * The server's CPU time (all threads) per answered query: unlike QPS, it barely moves
   * when other work takes time slices from the server's core.
   */
  cpuUsPerQuery: number
  /** The kernel's share of that CPU time: socket calls, loopback delivery, wake-ups. */
  sysShare: number
  /** Server CPU seconds per second of the run. */
  busy: number
  /**
   * Seconds the server sat runnable waiting for its core, per second of the run: other
   * work on the machine. busy + starved well under 1 means the server was idle: the client
   * side or the upstream was the limit.
   */
  starved: number
}

interface Files {
  blocked: string
  hit: Map<number, string>
  /** Distinct-name files: `miss[round]` for peak runs, `missLatency` for the rate-limited run, `missWarm` to warm the path. */
  miss: string[]
  missLatency: string
  missWarm: string
}

interface Ctx {
  o: Options
  /** egressd's cli.js, from the private build. */
  cli: string
  dir: string
  upstream: Managed
  files: Files
  metricsPort: Map<number, number>
}

async function startServer(ctx: Ctx, server: ServerName, rules: readonly Rule[], nodeArgs: string[] = []): Promise<Managed> {
  const port = await freePort()
  const common = { dir: ctx.dir, cpu: ctx.o.serverCpu, port, upstreamPort: ctx.upstream.port, rules }
  if (server === 'dnsmasq') return startDnsmasq(common)
  const metricsPort = await freePort()
  const m = await startEgressd({ ...common, cli: ctx.cli, metricsPort, sniPort: await freePort(), nodeArgs })
  ctx.metricsPort.set(m.pid, metricsPort)
  return m
}

/** Decodes a few answers of each kind in full: the records, not only the rcode. */
async function verifyAnswers(s: Managed, rules: readonly Rule[]): Promise<string[]> {
  const problems: string[] = []
  const allowed = allowedNames(rules, 5)
  const cases: [string, 'NXDOMAIN' | { a: string }][] = [
    ...blockedNames(3).map((n) => [n, 'NXDOMAIN'] as [string, 'NXDOMAIN']),
    ...allowed.map((n) => [n, { a: ANSWER }] as [string, { a: string }]),
    [`probe-${Date.now()}.bench.example`, { a: ANSWER }],
    // Allowed twice: the second comes from the cache and must carry the same record.
    [allowed[0]!, { a: ANSWER }],
  ]
  for (const [name, expect] of cases) {
    const p = checkAnswer(await probe(s.port, name), expect, name)
    if (p) problems.push(`${s.label}: ${p}`)
  }
  return problems
}

async function measure(ctx: Ctx, s: Managed, server: ServerName, rules: number, w: Workload, round: number, rate?: number): Promise<Measured> {
  const o = ctx.o
  const file = w === 'blocked' ? ctx.files.blocked : w === 'hit' ? ctx.files.hit.get(rules)! : rate ? ctx.files.missLatency : ctx.files.miss[round]!
  const metricsPort = ctx.metricsPort.get(s.pid)
  const before = metricsPort ? await scrape(metricsPort).catch(() => null) : null
  const cpuBefore = s.cpuSeconds()
  const sysBefore = s.sysSeconds()
  const waitBefore = s.waitSeconds()
  const result = await runDnsperf({
    port: s.port,
    file,
    seconds: o.seconds,
    // Miss names are sent once each: a second pass would be cache hits.
    maxRuns: w === 'miss' ? 1 : undefined,
    rate,
    outstanding: o.outstanding,
    percentiles: rate !== undefined,
    cpu: o.clientCpu,
  })
  const cpu = s.cpuSeconds() - cpuBefore
  const sys = s.sysSeconds() - sysBefore
  const waited = s.waitSeconds() - waitBefore
  const problems = problemsOf(w, result)
  if (metricsPort && before) {
    // egressd's own counters must agree that the workload took the intended path.
    const after = await scrape(metricsPort).catch(() => null)
    if (after) {
      const delta = (name: string, label = ''): number => metric(after, name, label) - metric(before, name, label)
      const want = result.completed * 0.99
      if (w === 'blocked' && delta('egressd_dns_queries_total', 'verdict="blocked"') < want) problems.push(`egressd counted ${delta('egressd_dns_queries_total', 'verdict="blocked"')} blocked of ${result.completed}`)
      if (w === 'hit' && delta('egressd_dns_cache_hits_total') < want) problems.push(`egressd counted ${delta('egressd_dns_cache_hits_total')} cache hits of ${result.completed}`)
      if (w === 'miss' && delta('egressd_dns_cache_misses_total') < want) problems.push(`egressd counted ${delta('egressd_dns_cache_misses_total')} cache misses of ${result.completed}`)
    } else problems.push('metrics scrape failed after the run')
  }
  if (!s.alive()) problems.push(`${server} died: ${s.output().slice(-5).join(' | ')}`)
  const lossy = result.lost > result.sent * LOSS_TOLERANCE
  return {
    server, rules, workload: w, result, problems, lossy, rate, round,
    load: Math.round(loadavg()[0]! * 100) / 100,
    cpuUsPerQuery: result.completed > 0 ? (cpu * 1e6) / result.completed : NaN,
    sysShare: cpu > 0 ? sys / cpu : NaN,
    busy: result.runtime > 0 ? cpu / result.runtime : NaN,
    starved: result.runtime > 0 ? waited / result.runtime : NaN,
  }
}

/** A short unmeasured pass so JIT and caches are warm, the same for both servers. */
async function warm(ctx: Ctx, s: Managed, rules: number, w: Workload): Promise<string[]> {
  const file = w === 'blocked' ? ctx.files.blocked : w === 'hit' ? ctx.files.hit.get(rules)! : ctx.files.missWarm
  const r = await runDnsperf({ port: s.port, file, seconds: 1, maxRuns: 1, outstanding: ctx.o.outstanding, cpu: ctx.o.clientCpu })
  return problemsOf(w, r).map((p) => `warm-up ${w}: ${p}`)
}

/** A server's best round of a workload: the one least disturbed by other work on the machine. */
function best(all: readonly Measured[], server: ServerName, rules: number, w: Workload): Measured | undefined {
  let top: Measured | undefined
  for (const m of all) {
    if (m.server !== server || m.rules !== rules || m.workload !== w || m.rate !== undefined) continue
    if (!top || m.result.qps > top.result.qps) top = m
  }
  return top
}

/** "busy/starved" in percent of the run, e.g. `35/60`. */
function busyCell(m?: Measured): string {
  return m ? `${fmt(m.busy * 100)}/${fmt(m.starved * 100)}` : '-'
}

function round3(n: number): number | null {
  return Number.isFinite(n) ? Math.round(n * 1000) / 1000 : null
}

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return '-'
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |'
  return [line(head), '|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|', ...rows.map(line)].join('\n')
}

interface RssReport {
  names: number
  sent: number
  completed: number
  seconds: number
  qps: number
  startKb: number
  /** RSS when the cache first held its maximum: from here on, entries are evicted. */
  fullKb: number | null
  fullAfterNames: number | null
  endKb: number
  maxKb: number
  afterKb: number
  cacheEntries: number
  cacheBytes: number
  /**
   * Samples right after a major GC (V8 heap used fell by over a quarter since the previous
   * second) once the cache was full: [names so far, RSS KiB, heap used bytes].
   */
  afterGc: [number, number, number][]
  /** [names so far, RSS MiB, V8 heap used MiB, external MiB, cache entries], at most ~40 points. */
  curve: [number, number, number, number, number][]
  /** null: fewer than two major GCs after the cache filled, too few names to judge. */
  bounded: boolean | null
  problems: string[]
}

/**
 * egressd across `names` distinct allowed names, one pass (time-limited), RSS, V8 heap and
 * the cache gauges sampled every second. V8 collects lazily, so once the cache is full RSS
 * is a sawtooth (here 250 to 450 MiB over ~400 k names), and neither its last value nor a
 * fitted line says anything over a window shorter than a few GC cycles. What a leak would
 * show is the heap that survives a major GC growing from one GC to the next: bounded means
 * the cache stayed at its limit and the heap after the last major GC is within 20 % of the
 * heap after the first one following the cache filling. Fewer than two such GCs: not shown.
 */
async function rssRun(ctx: Ctx, rules: readonly Rule[]): Promise<RssReport> {
  const o = ctx.o
  const file = join(ctx.dir, 'rss-names.txt')
  await writeMissFile(file, o.rssNames, `rss${process.pid}`)
  const s = await startServer(ctx, 'egressd', rules)
  const metricsPort = ctx.metricsPort.get(s.pid)!
  try {
    // Warm so the start sample is the steady-state heap, not the freshly started one.
    await warm(ctx, s, rules.length, 'miss')
    const startKb = s.rssKb()
    const base = metric(await scrape(metricsPort), 'egressd_dns_cache_misses_total')
    const samples: { kb: number; heap: number; external: number; entries: number; bytes: number; misses: number }[] = []
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        await new Promise((res) => setTimeout(res, 1000))
        const m = await scrape(metricsPort).catch(() => null)
        if (m) {
          samples.push({
            kb: s.rssKb(),
            heap: metric(m, 'nodejs_heap_size_used_bytes'),
            external: metric(m, 'nodejs_external_memory_bytes'),
            entries: metric(m, 'egressd_dns_cache_entries'),
            bytes: metric(m, 'egressd_dns_cache_bytes'),
            misses: metric(m, 'egressd_dns_cache_misses_total') - base,
          })
        }
      }
    })()
    const r = await runDnsperf({
      port: s.port, file, seconds: o.rssSeconds, maxRuns: 1, outstanding: o.outstanding, cpu: o.clientCpu,
    })
    sampling = false
    await sampler
    const endKb = s.rssKb()
    // Let pending upstream work settle before the "after" sample.
    await new Promise((res) => setTimeout(res, 2000))
    const afterKb = s.rssKb()
    const m = await scrape(metricsPort).catch(() => new Map<string, number>())
    const full = samples.find((x) => x.entries >= EGRESSD_CACHE_ENTRIES * 0.99 || x.bytes >= EGRESSD_CACHE_BYTES * 0.99)
    const afterGc: [number, number, number][] = []
    for (let i = 1; i < samples.length; i++) {
      const x = samples[i]!
      if (full && x.misses > full.misses && x.heap < samples[i - 1]!.heap * 0.75) afterGc.push([x.misses, x.kb, x.heap])
    }
    const first = afterGc[0]
    const last = afterGc[afterGc.length - 1]
    const stride = Math.max(1, Math.ceil(samples.length / 40))
    const mib = (b: number): number => Math.round(b / 104857.6) / 10
    const curve = samples.filter((_, i) => i % stride === 0 || i === samples.length - 1)
      .map((x): [number, number, number, number, number] => [x.misses, mib(x.kb * 1024), mib(x.heap), mib(x.external), x.entries])
    const problems = problemsOf('miss', r)
    if (!s.alive()) problems.push('egressd died during the RSS run')
    return {
      names: o.rssNames,
      sent: r.sent,
      completed: r.completed,
      seconds: r.runtime,
      qps: r.qps,
      startKb,
      fullKb: full?.kb ?? null,
      fullAfterNames: full?.misses ?? null,
      endKb,
      maxKb: Math.max(startKb, endKb, ...samples.map((x) => x.kb)),
      afterKb,
      cacheEntries: metric(m, 'egressd_dns_cache_entries'),
      cacheBytes: metric(m, 'egressd_dns_cache_bytes'),
      afterGc,
      curve,
      bounded: afterGc.length < 2 ? null : last![2] <= first![2] * 1.2 && metric(m, 'egressd_dns_cache_entries') <= EGRESSD_CACHE_ENTRIES,
      problems,
    }
  } finally {
    await s.stop()
    rmSync(file, { force: true })
  }
}

async function profileRun(ctx: Ctx, rules: readonly Rule[], w: Workload): Promise<void> {
  const profDir = join(ctx.dir, 'cpu-prof')
  const s = await startServer(ctx, 'egressd', rules, ['--cpu-prof', `--cpu-prof-dir=${profDir}`])
  let m: Measured
  try {
    if (w === 'hit') await warm(ctx, s, rules.length, 'hit')
    m = await measure(ctx, s, 'egressd', rules.length, w, 0)
  } finally {
    await s.stop()
  }
  const files = existsSync(profDir) ? readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')) : []
  if (files.length === 0) {
    emit({ kind: 'profile', workload: w, error: 'no .cpuprofile written (did egressd exit cleanly on SIGTERM?)' })
    return
  }
  // The run is the last `seconds` of the profile, give or take the scrape and the shutdown.
  const { totalMs, frames } = topFrames(join(profDir, files[0]!), 25, ctx.o.seconds * 1000 + 300)
  emit({ kind: 'profile', workload: w, rules: rules.length, qps: Math.round(m.result.qps), profile_ms: Math.round(totalMs), frames })
  process.stdout.write(`\negressd --cpu-prof, ${w}, ${rules.length} rules, ${fmt(m.result.qps)} QPS (profiling on): top self time over the run's last ${fmt(totalMs)} ms\n`)
  process.stdout.write(table(['function', 'self %', 'where'], frames.map((f) => [f.fn, f.selfPct.toFixed(1), f.where])) + '\n')
}

export async function run(args: string[]): Promise<void> {
  const o = parseOptions(args)
  ensureTools()
  // This process parses dnsperf -v output: keep it, every thread of it, off the server's core.
  sh('taskset', ['-a', '-p', '-c', o.clientCpu, String(process.pid)])
  if (o.nice !== null) {
    setNiceness(o.nice)
    sh('renice', ['-n', String(o.nice), '-p', String(process.pid)])
  }
  const env = environment(o)
  emit({ kind: 'env', ...env })

  const dir = mkdtempSync(join(tmpdir(), 'egressd-bench-dns-'))
  const cli = buildSnapshot(o, dir)
  const started: Managed[] = []
  const measured: Measured[] = []
  const latency: Measured[] = []
  /** The same latency runs at LOW_RATE. */
  const quiet: Measured[] = []
  const failures: string[] = []
  let rss: RssReport | null = null
  let ceiling: DnsperfResult | null = null
  let egressdError: string | null = null
  try {
    const upstream = await startFakeUpstream(o.clientCpu)
    started.push(upstream)
    const files: Files = {
      blocked: join(dir, 'blocked.txt'),
      hit: new Map(),
      miss: [],
      missLatency: join(dir, 'miss-latency.txt'),
      missWarm: join(dir, 'miss-warm.txt'),
    }
    await writeQueryFile(files.blocked, blockedNames(BLOCKED_NAMES))
    await writeMissFile(files.missWarm, 200_000, `warm${process.pid}`)
    const ctx: Ctx = { o, cli, dir, upstream, files, metricsPort: new Map() }

    // The upstream's own ceiling, on the core it shares with dnsperf: a miss figure near it
    // measures the upstream, not the server.
    ceiling = await runDnsperf({ port: upstream.port, file: files.blocked, seconds: o.seconds, outstanding: o.outstanding, cpu: o.clientCpu })
    emit({ kind: 'upstream_ceiling', qps: Math.round(ceiling.qps), avg_ms: ceiling.avgMs, lost: ceiling.lost })
    // Enough distinct names for a run at twice the ceiling, so a fast server never runs dry;
    // one file per round, since a server must never see a miss name twice.
    const missLines = Math.max(50_000, Math.ceil(ceiling.qps * 2 * o.seconds))
    for (let r = 0; r < o.rounds; r++) {
      files.miss.push(join(dir, `miss-${r}.txt`))
      await writeMissFile(files.miss[r]!, missLines, `r${r}p${process.pid}`)
    }
    await writeMissFile(files.missLatency, missLines, `lat${process.pid}`)

    for (const count of o.rules) {
      const rules = makeRules(count)
      const hitFile = join(dir, `hit-${count}.txt`)
      await writeQueryFile(hitFile, allowedNames(rules, HIT_NAMES))
      files.hit.set(count, hitFile)
      const servers = new Map<ServerName, Managed>()
      try {
        for (const server of ['egressd', 'dnsmasq'] as const) {
          try {
            const s = await startServer(ctx, server, rules)
            started.push(s)
            servers.set(server, s)
          } catch (e) {
            const msg = (e as Error).message
            if (server === 'egressd') egressdError = msg
            failures.push(`${server} at ${count} rules: ${msg}`)
            emit({ kind: 'error', server, rules: count, error: msg })
            continue
          }
          const wrong = await verifyAnswers(servers.get(server)!, rules)
          failures.push(...wrong)
          emit({ kind: 'answers', server, rules: count, ok: wrong.length === 0, problems: wrong })
        }
        // The floor of a Node dgram server on the same core: answers NXDOMAIN to anything, so
        // only the blocked workload applies. egressd/floor says how much is egressd's own work.
        const floor = await startFakeUpstream(o.serverCpu, true)
        started.push(floor)
        servers.set('node-floor', floor)
        const floorWrong = (await Promise.all(blockedNames(3).map(async (n) => checkAnswer(await probe(floor.port, n), 'NXDOMAIN', n)))).filter((p) => p !== null)
        failures.push(...floorWrong.map((p) => `node-floor: ${p}`))
        for (const w of WORKLOADS) {
          const here = (name: ServerName): boolean => servers.has(name) && (name !== 'node-floor' || w === 'blocked')
          for (const [server, s] of servers) if (here(server)) failures.push(...(await warm(ctx, s, count, w)).map((p) => `${server} ${count}: ${p}`))
          for (let r = 0; r < o.rounds; r++) {
            const order: ServerName[] = r % 2 === 0 ? ['egressd', 'dnsmasq', 'node-floor'] : ['node-floor', 'dnsmasq', 'egressd']
            for (const server of order) {
              const s = here(server) ? servers.get(server) : undefined
              if (!s) continue
              const m = await measure(ctx, s, server, count, w, r)
              measured.push(m)
              failures.push(...m.problems.map((p) => `${server} ${count} ${w} round ${r}: ${p}`))
              emit({
                kind: 'peak', server, rules: count, workload: w, round: r, qps: Math.round(m.result.qps), avg_ms: m.result.avgMs,
                max_ms: m.result.maxMs, sent: m.result.sent, completed: m.result.completed, lost: m.result.lost,
                rcodes: m.result.rcodes, cpu_us_per_query: round3(m.cpuUsPerQuery), sys_share: round3(m.sysShare), server_busy: round3(m.busy),
                server_starved: round3(m.starved), rss_kb: s.rssKb(), loadavg_1m: m.load, correct: m.problems.length === 0, lossy: m.lossy, problems: m.problems,
              })
            }
          }
        }
        if (o.latency && count === Math.max(...o.rules)) {
          for (const w of WORKLOADS) {
            const peak = best(measured, 'egressd', count, w)
            if (!peak || !(peak.result.qps > 0)) continue
            const rate = Math.round(peak.result.qps * 0.8)
            for (const [server, s] of servers) {
              if (server === 'node-floor') continue
              // The miss runs since the hit runs may have evicted the hit set (dnsmasq's cache is 10 000).
              if (w === 'hit') failures.push(...(await warm(ctx, s, count, w)).map((p) => `${server} ${count}: ${p}`))
              const m = await measure(ctx, s, server, count, w, 0, rate)
              latency.push(m)
              failures.push(...m.problems.map((p) => `${server} ${count} ${w} @${rate}: ${p}`))
              emit({
                kind: 'latency', server, rules: count, workload: w, rate, of_peak: 0.8, qps: Math.round(m.result.qps), avg_ms: m.result.avgMs,
                p50_ms: m.result.p50Ms, p99_ms: m.result.p99Ms, p999_ms: m.result.p999Ms, max_ms: m.result.maxMs,
                over_1s: m.result.overflow, lost: m.result.lost, cpu_us_per_query: round3(m.cpuUsPerQuery), server_busy: round3(m.busy),
                server_starved: round3(m.starved), loadavg_1m: m.load, correct: m.problems.length === 0, problems: m.problems,
              })
            }
          }
          for (const w of ['blocked', 'hit'] as const) {
            for (const [server, s] of servers) {
              if (server === 'node-floor') continue
              if (w === 'hit') failures.push(...(await warm(ctx, s, count, w)).map((p) => `${server} ${count}: ${p}`))
              const m = await measure(ctx, s, server, count, w, 0, LOW_RATE)
              quiet.push(m)
              failures.push(...m.problems.map((p) => `${server} ${count} ${w} @${LOW_RATE}: ${p}`))
              emit({
                kind: 'latency', server, rules: count, workload: w, rate: LOW_RATE, of_peak: null, qps: Math.round(m.result.qps), avg_ms: m.result.avgMs,
                p50_ms: m.result.p50Ms, p99_ms: m.result.p99Ms, p999_ms: m.result.p999Ms, max_ms: m.result.maxMs,
                lost: m.result.lost, server_busy: round3(m.busy), server_starved: round3(m.starved), loadavg_1m: m.load,
                correct: m.problems.length === 0, problems: m.problems,
              })
            }
          }
        }
      } finally {
        for (const s of servers.values()) {
          await s.stop()
          started.splice(started.indexOf(s), 1)
        }
      }
    }

    if (o.rss && egressdError === null) {
      rss = await rssRun(ctx, makeRules(Math.min(...o.rules)))
      failures.push(...rss.problems.map((p) => `rss: ${p}`))
      emit({ kind: 'rss', ...rss })
    }
    if (o.profile && egressdError === null) await profileRun(ctx, makeRules(Math.max(...o.rules)), o.profile)
  } finally {
    for (const p of started.reverse()) await p.stop()
    rmSync(dir, { recursive: true, force: true })
  }

  // Ratios and bars, from figures of this same run.
  const get = (server: ServerName, rules: number, w: Workload): Measured | undefined => best(measured, server, rules, w)
  /** `starved`: a server waited for its core over STARVED_LIMIT of the run: the verdict reflects the machine's load. */
  const bars: { bar: string; value: string; pass: boolean | null; starved?: boolean }[] = []
  const peakRows: string[][] = []
  for (const count of o.rules) {
    for (const w of WORKLOADS) {
      const e = get('egressd', count, w)
      const d = get('dnsmasq', count, w)
      const ratio = e && d && d.result.qps > 0 ? e.result.qps / d.result.qps : NaN
      // CPU per query: dnsmasq's over egressd's, so above 1 means egressd spends less.
      const cpuRatio = e && d ? d.cpuUsPerQuery / e.cpuUsPerQuery : NaN
      emit({
        kind: 'ratio', rules: count, workload: w,
        egressd_qps: e ? Math.round(e.result.qps) : null, dnsmasq_qps: d ? Math.round(d.result.qps) : null, ratio: round3(ratio),
        egressd_cpu_us_per_query: round3(e?.cpuUsPerQuery ?? NaN), dnsmasq_cpu_us_per_query: round3(d?.cpuUsPerQuery ?? NaN),
        cpu_efficiency_ratio: round3(cpuRatio),
      })
      const mark = (m?: Measured): string => (m ? (m.problems.length ? ' !' : m.lossy ? ' ~' : '') : '')
      peakRows.push([
        `${w} @ ${fmt(count)} rules`,
        fmt(d?.result.qps) + mark(d), fmt(d?.result.avgMs, 2), fmt(d?.cpuUsPerQuery, 1), busyCell(d),
        fmt(e?.result.qps) + mark(e), fmt(e?.result.avgMs, 2), fmt(e?.cpuUsPerQuery, 1), busyCell(e),
        Number.isFinite(ratio) ? ratio.toFixed(2) + '×' : '-',
        Number.isFinite(cpuRatio) ? cpuRatio.toFixed(2) + '×' : '-',
      ])
      if (w !== 'miss') {
        // Every round of both servers must have answered correctly, not only the best ones.
        const ok = e && d && measured.every((m) => m.rules !== count || m.workload !== w || m.problems.length === 0)
        const starved = !!e && !!d && (e.starved > STARVED_LIMIT || d.starved > STARVED_LIMIT)
        bars.push({
          bar: `${w} QPS ≥ 1.0× dnsmasq @ ${fmt(count)} rules`,
          value: (Number.isFinite(ratio) ? ratio.toFixed(2) + '×' : 'not run') + (Number.isFinite(cpuRatio) ? ` (CPU/q ${cpuRatio.toFixed(2)}×)` : ''),
          pass: ok ? ratio >= 1 : null,
          starved,
        })
      }
    }
  }
  const floorRows: string[][] = []
  for (const count of o.rules) {
    const f = get('node-floor', count, 'blocked')
    const e = get('egressd', count, 'blocked')
    const d = get('dnsmasq', count, 'blocked')
    if (!f) continue
    emit({
      kind: 'floor', rules: count, workload: 'blocked', floor_qps: Math.round(f.result.qps), floor_cpu_us_per_query: round3(f.cpuUsPerQuery),
      egressd_over_floor_qps: e ? round3(e.result.qps / f.result.qps) : null, dnsmasq_over_floor_qps: d ? round3(d.result.qps / f.result.qps) : null,
    })
    floorRows.push([
      `blocked @ ${fmt(count)} rules`, fmt(f.result.qps), fmt(f.cpuUsPerQuery, 1), busyCell(f),
      e ? (e.result.qps / f.result.qps).toFixed(2) + '×' : '-', e ? fmt(e.cpuUsPerQuery - f.cpuUsPerQuery, 1) : '-',
      d ? (d.result.qps / f.result.qps).toFixed(2) + '×' : '-',
      [f, e, d].map((m) => (m ? fmt(m.sysShare * 100) : '-')).join('/'),
    ])
  }
  for (const m of latency.filter((x) => x.server === 'egressd')) {
    bars.push({
      bar: `p99 < 1 ms at 80 % of peak, ${m.workload} @ ${fmt(m.rules)} rules`,
      value: `${fmt(m.result.p99Ms, 3)} ms`,
      pass: m.problems.length === 0 && m.result.p99Ms !== undefined ? m.result.p99Ms < 1 : null,
      starved: m.starved > STARVED_LIMIT,
    })
  }
  if (rss) {
    bars.push({
      bar: `RSS bounded over ${fmt(rss.names)} distinct allowed names`,
      value: rss.afterGc.length < 2
        ? `not shown: ${rss.afterGc.length} major GC after the cache filled in ${fmt(rss.sent)} names, max ${fmt(rss.maxKb / 1024)} MiB`
        : `heap after GC ${fmt(rss.afterGc[0]![2] / 1048576)} → ${fmt(rss.afterGc[rss.afterGc.length - 1]![2] / 1048576)} MiB, RSS max ${fmt(rss.maxKb / 1024)} MiB` +
          (rss.sent < rss.names ? ` (time limit: ${fmt(rss.sent)} names)` : ''),
      pass: rss.problems.length === 0 ? rss.bounded : null,
    })
  }
  for (const b of bars) emit({ kind: 'bar', ...b })

  const out: string[] = []
  out.push(`\nDNS: egressd vs dnsmasq — ${env.date}, ${env.nproc} cores (${env.cpu}), node ${env.node}, dnsmasq ${env.dnsmasq}, dnsperf ${env.dnsperf}`)
  out.push(`servers on core ${o.serverCpu}; dnsperf (-q ${o.outstanding}), fake upstream and this process on core ${o.clientCpu}; ${o.seconds} s per run` +
    (o.nice !== null ? `; all at nice ${o.nice}` : ''))
  const loads = [...measured, ...latency, ...quiet].map((m) => m.load)
  const maxLoad = Math.max(Number(env.loadavg_1m), ...loads)
  if (maxLoad > Number(env.nproc)) {
    out.push(`WARNING: 1-minute load average reached ${maxLoad.toFixed(1)} on ${env.nproc} cores: other work shared the pinned cores, ` +
      'so QPS is understated and latency includes waits for a time slice (ratios, taken ABBA, hold up better)')
  }
  if (ceiling) out.push(`fake upstream ceiling (dnsperf straight at it): ${fmt(ceiling.qps)} QPS, avg ${fmt(ceiling.avgMs, 3)} ms`)
  out.push('')
  out.push(table(['workload', 'dnsmasq QPS', 'avg ms', 'µs CPU/q', 'busy/wait %', 'egressd QPS', 'avg ms', 'µs CPU/q', 'busy/wait %', 'QPS e/d', 'CPU/q d/e'], peakRows))
  out.push('(QPS e/d: egressd QPS over dnsmasq QPS; CPU/q d/e: dnsmasq CPU per query over egressd\'s, above 1 = egressd cheaper;')
  out.push(' busy/wait %: server CPU time / time runnable but waiting for its core (other work), over run time;')
  out.push(' a sum well under 100 = the client side or the upstream was the limit)')
  out.push(`(best of ${o.rounds} round${o.rounds > 1 ? 's' : ''} each, alternated ABBA; ! = failed a correctness check, ~ = lost more than 0.1 % of queries)`)
  if (floorRows.length) {
    out.push('')
    out.push(table(['Node dgram floor (NXDOMAIN echo)', 'QPS', 'µs CPU/q', 'busy/wait %', 'egressd/floor', 'egressd µs over floor', 'dnsmasq/floor', 'kernel % f/e/d'], floorRows))
    out.push('(kernel %: system time\'s share of each server\'s CPU time: floor / egressd / dnsmasq)')
  }
  if (latency.length) {
    out.push('')
    out.push(table(
      ['latency, 80 % of egressd peak, then 1 000 QPS', 'rate', 'server', 'QPS', 'avg ms', 'p50 ms', 'p99 ms', 'p99.9 ms', 'lost', 'busy/wait %'],
      [...latency, ...quiet].map((m) => [`${m.workload} @ ${fmt(m.rules)} rules`, fmt(m.rate), m.server, fmt(m.result.qps), fmt(m.result.avgMs, 3), fmt(m.result.p50Ms, 3), fmt(m.result.p99Ms, 3), fmt(m.result.p999Ms, 3), fmt(m.result.lost), busyCell(m)]),
    ))
    out.push('(p50/p99 from dnsperf -v per-response latencies, 1 µs histogram)')
  }
  if (rss) {
    out.push('')
    out.push(`RSS, egressd, ${fmt(rss.sent)} distinct names under *.bench.example in ${fmt(rss.seconds, 1)} s (${fmt(rss.qps)} QPS): ` +
      `start ${fmt(rss.startKb / 1024, 1)} MiB, cache full ${rss.fullKb === null ? 'never' : `${fmt(rss.fullKb / 1024, 1)} MiB (after ${fmt(rss.fullAfterNames ?? undefined)} names)`}, ` +
      `end ${fmt(rss.endKb / 1024, 1)}, max ${fmt(rss.maxKb / 1024, 1)}, 2 s later ${fmt(rss.afterKb / 1024, 1)} MiB; ` +
      `cache ${fmt(rss.cacheEntries)} entries, ${fmt(rss.cacheBytes / 1048576, 1)} MiB`)
    out.push(`  after each major GC once the cache was full (names: RSS MiB / V8 heap used MiB): ` +
      (rss.afterGc.length ? rss.afterGc.map(([n, kb, heap]) => `${fmt(n / 1000)}k: ${fmt(kb / 1024)} / ${fmt(heap / 1048576)}`).join(', ') : 'none'))
    out.push('  names → RSS MiB (heap used MiB): ' + rss.curve.filter((_, i) => i % 4 === 0).map((c) => `${fmt(c[0] / 1000)}k→${c[1]} (${c[2]})`).join(', '))
  }
  out.push('')
  out.push(table(['bar', 'value', 'result'], bars.map((b) => [b.bar, b.value, (b.pass === null ? 'NOT SHOWN' : b.pass ? 'pass' : 'FAIL') + (b.starved ? ' *' : '')])))
  if (bars.some((b) => b.starved)) out.push(`* a server waited for its core over ${STARVED_LIMIT * 100} % of the run: other work on the machine, not the server, set this figure`)
  if (egressdError) out.push(`\negressd could not be started: ${egressdError}`)
  if (failures.length) out.push(`\ncorrectness problems (${failures.length}):\n  ` + failures.slice(0, 30).join('\n  '))
  process.stdout.write(out.join('\n') + '\n')
  // A wrong answer invalidates the figures: fail loudly. A failed performance bar is a result, not an error.
  if (failures.length) process.exitCode = 1
}

if (import.meta.url === `file://${process.argv[1]}`) await run(process.argv.slice(2))
