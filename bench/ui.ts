/**
 * `npm run bench -- ui --old-cli PATH [options]`: what the status page costs the daemon.
 *
 * Part 1, page closed (the hot path): an egressd built without the page (`--old-cli`,
 * e.g. the previous commit's dist/cli.js) and this tree's build run side by side on the
 * same core with the same configuration at `log.level: info`, so blocked queries write
 * their lines (up to the log limit) and, in the new build, reach the event ring. dnsperf
 * drives each at full speed with 10 000 distinct blocked names, then cache hits; runs
 * alternate ABBA per round. Reported: QPS and the daemon's CPU µs per query.
 *
 * Part 2, pages open: this tree's build at a fixed 5 000 blocked queries/s (dnsperf -Q),
 * with 0 and with 5 emulated pages alternating. A page does what app.js does: GET
 * /api/state and /api/events, then reads /api/stream, and GETs /api/proposal at most
 * every 3 s while new events arrive. Reported: the daemon's CPU share per run, the rise
 * with pages, events each page received, and the daemon's RSS over a longer run with
 * pages (it must level off: the ring and the stream buffers are bounded).
 *
 * Options: --seconds N (per run, default 10), --rounds N (default 2), --rate N (part 2,
 * default 5000), --pages N (default 5), --rss-seconds N (default 60), --server-cpu N,
 * --client-cpu N, --nice N, --no-ab, --no-pages.
 */
import { mkdtempSync } from 'node:fs'
import { get, type IncomingMessage } from 'node:http'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { allowedNames, blockedNames, makeRules, writeQueryFile } from './dns/corpus.js'
import { runDnsperf } from './dns/dnsperf.js'
import { setNiceness } from './dns/pin.js'
import { freePort, startEgressd, startFakeUpstream, type Managed } from './dns/servers.js'

interface Options {
  oldCli: string | null
  seconds: number
  rounds: number
  rate: number
  pages: number
  rssSeconds: number
  serverCpu: string
  clientCpu: string
  ab: boolean
  pagesPart: boolean
}

function parse(args: string[]): Options {
  const o: Options = { oldCli: null, seconds: 10, rounds: 2, rate: 5000, pages: 5, rssSeconds: 60, serverCpu: '0', clientCpu: '1', ab: true, pagesPart: true }
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    const next = (): string => args[++i] ?? ''
    if (a === '--old-cli') o.oldCli = next()
    else if (a === '--seconds') o.seconds = Number(next())
    else if (a === '--rounds') o.rounds = Number(next())
    else if (a === '--rate') o.rate = Number(next())
    else if (a === '--pages') o.pages = Number(next())
    else if (a === '--rss-seconds') o.rssSeconds = Number(next())
    else if (a === '--server-cpu') o.serverCpu = next()
    else if (a === '--client-cpu') o.clientCpu = next()
    else if (a === '--nice') setNiceness(Number(next()))
    else if (a === '--no-ab') o.ab = false
    else if (a === '--no-pages') o.pagesPart = false
    else throw new Error(`unknown option ${a}`)
  }
  if (o.ab && o.oldCli === null) throw new Error('--old-cli PATH (an egressd cli.js without the status page) is needed for the A/B; or --no-ab')
  return o
}

const NEW_CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url))
const RULES = makeRules(10)

async function start(cli: string, upstreamPort: number, cpu: string): Promise<Managed & { metricsPort: number }> {
  const [port, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const m = await startEgressd({ cli, port, sniPort, metricsPort, upstreamPort, rules: RULES, dir: mkdtempSync(join(tmpdir(), 'egressd-bench-ui-')), cpu, nodeArgs: [], logLevel: 'info' })
  return Object.assign(m, { metricsPort })
}

/** One dnsperf run against `m`, with the daemon's CPU over exactly that run. */
async function measure(m: Managed, file: string, o: Options, rate?: number) {
  const cpu0 = m.cpuSeconds()
  const wait0 = m.waitSeconds()
  const t0 = performance.now()
  const r = await runDnsperf({ port: m.port, file, seconds: o.seconds, outstanding: 100, cpu: o.clientCpu, rate })
  const wall = (performance.now() - t0) / 1000
  const cpu = m.cpuSeconds() - cpu0
  return { qps: r.qps, completed: r.completed, lost: r.lost, cpuUsPerQuery: (cpu / r.completed) * 1e6, cpuShare: cpu / wall, waited: (m.waitSeconds() - wait0) / wall }
}

/** What app.js does against the API; counts what it receives. */
class EmulatedPage {
  events = 0
  bytes = 0
  proposals = 0
  private req: ReturnType<typeof get> | null = null
  private timer: NodeJS.Timeout | null = null
  private dirty = false

  constructor(private readonly port: number) {}

  async open(): Promise<void> {
    await fetchText(this.port, '/api/state')
    await fetchText(this.port, '/api/events')
    await new Promise<void>((resolve, reject) => {
      this.req = get({ host: '127.0.0.1', port: this.port, path: '/api/stream' }, (res: IncomingMessage) => {
        if (res.statusCode !== 200) return reject(new Error(`stream: HTTP ${res.statusCode}`))
        res.setEncoding('utf8')
        res.on('data', (d: string) => {
          this.bytes += d.length
          for (let i = d.indexOf('event: decision'); i >= 0; i = d.indexOf('event: decision', i + 1)) this.events++
          this.dirty = true
        })
        resolve()
      })
      this.req.on('error', () => {})
    })
    this.timer = setInterval(() => {
      if (!this.dirty) return
      this.dirty = false
      this.proposals++
      void fetchText(this.port, '/api/proposal').catch(() => {})
    }, 3000)
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.req?.destroy()
  }
}

function fetchText(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => resolve(body))
    }).on('error', reject)
  })
}

async function withPages<T>(n: number, port: number, run: () => Promise<T>): Promise<{ result: T; pages: EmulatedPage[] }> {
  const pages = Array.from({ length: n }, () => new EmulatedPage(port))
  for (const p of pages) await p.open()
  try {
    return { result: await run(), pages }
  } finally {
    for (const p of pages) p.close()
  }
}

const f1 = (x: number): string => x.toFixed(1)

export async function run(args: string[]): Promise<void> {
  const o = parse(args)
  const dir = mkdtempSync(join(tmpdir(), 'egressd-bench-ui-'))
  const blockedFile = join(dir, 'blocked.txt')
  await writeQueryFile(blockedFile, blockedNames(10_000))
  const hitFile = join(dir, 'hit.txt')
  await writeQueryFile(hitFile, allowedNames(RULES, 1_000))
  const upstream = await startFakeUpstream(o.clientCpu)
  const started = new Date().toISOString()
  process.stdout.write(JSON.stringify({ bench: 'ui', started, cpu: cpus()[0]?.model, cores: cpus().length, load: loadavg() }) + '\n')
  const managed: Managed[] = [upstream]
  try {
    if (o.ab) {
      const old = await start(o.oldCli!, upstream.port, o.serverCpu)
      const neu = await start(NEW_CLI, upstream.port, o.serverCpu)
      managed.push(old, neu)
      // Warm the caches of both, so the hit runs are hits.
      for (const m of [old, neu]) await runDnsperf({ port: m.port, file: hitFile, seconds: 2, maxRuns: 1, outstanding: 20, cpu: o.clientCpu })
      const rows: string[] = []
      for (let round = 0; round < o.rounds; round++) {
        const order = round % 2 === 0 ? [old, neu, neu, old] : [neu, old, old, neu]
        for (const workload of ['blocked', 'hit'] as const) {
          for (const m of order.slice(0, 2)) {
            const r = await measure(m, workload === 'blocked' ? blockedFile : hitFile, o)
            const label = m === old ? 'before (no page)' : 'after (page code, closed)'
            process.stdout.write(JSON.stringify({ part: 'ab', round, workload, build: label, ...r }) + '\n')
            rows.push(`| ${round + 1} | ${workload} | ${label} | ${Math.round(r.qps)} | ${f1(r.cpuUsPerQuery)} | ${Math.round(r.waited * 100)} % |`)
          }
        }
      }
      process.stdout.write('\n| round | workload | build | QPS | µs CPU/query | waited for core |\n|---|---|---|---|---|---|\n' + rows.join('\n') + '\n\n')
      await old.stop()
      await neu.stop()
    }

    if (o.pagesPart) {
      const neu = await start(NEW_CLI, upstream.port, o.serverCpu)
      managed.push(neu)
      const rows: string[] = []
      const shares: Record<string, number[]> = { '0': [], [String(o.pages)]: [] }
      for (let round = 0; round < o.rounds * 2; round++) {
        const n = round % 2 === 0 ? 0 : o.pages
        const { result: r, pages } = await withPages(n, neu.metricsPort, () => measure(neu, blockedFile, o, o.rate))
        shares[String(n)]!.push(r.cpuShare)
        const perPage = pages.length ? Math.round(pages.reduce((a, p) => a + p.events, 0) / pages.length) : 0
        const proposals = pages.reduce((a, p) => a + p.proposals, 0)
        process.stdout.write(JSON.stringify({ part: 'pages', round, pages: n, ...r, eventsPerPage: perPage, proposals, rssKb: neu.rssKb() }) + '\n')
        rows.push(`| ${round + 1} | ${n} | ${Math.round(r.qps)} | ${f1(r.cpuShare * 100)} % | ${f1(r.cpuUsPerQuery)} | ${perPage} | ${proposals} | ${Math.round(neu.rssKb() / 1024)} MiB |`)
      }
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length
      const closed = mean(shares['0']!)
      const open = mean(shares[String(o.pages)]!)
      process.stdout.write(`\n| run | pages | QPS | daemon CPU | µs CPU/query | events per page | proposals fetched | RSS after |\n|---|---|---|---|---|---|---|---|\n${rows.join('\n')}\n\n`)
      process.stdout.write(`mean daemon CPU: ${f1(closed * 100)} % with no page, ${f1(open * 100)} % with ${o.pages}: ×${(open / closed).toFixed(3)} (${f1((open / closed - 1) * 100)} %)\n\n`)

      // Memory with pages open over a longer run: sampled every 5 s, it must level off.
      const rss: number[] = []
      const { pages } = await withPages(o.pages, neu.metricsPort, async () => {
        const timer = setInterval(() => rss.push(Math.round(neu.rssKb() / 1024)), 5000)
        await runDnsperf({ port: neu.port, file: blockedFile, seconds: o.rssSeconds, outstanding: 100, cpu: o.clientCpu, rate: o.rate })
        clearInterval(timer)
      })
      process.stdout.write(JSON.stringify({ part: 'rss', seconds: o.rssSeconds, pages: o.pages, rssMiB: rss, eventsPerPage: pages.map((p) => p.events) }) + '\n')
      process.stdout.write(`RSS (MiB, every 5 s, ${o.pages} pages, ${o.rate} blocked q/s): ${rss.join(' ')}\n`)
      await neu.stop()
    }
  } finally {
    for (const m of managed) await m.stop()
  }
}
