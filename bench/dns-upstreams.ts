/**
 * `npm run bench -- dns-upstreams [--seconds N] [--rounds N] [--outstanding N] [--cli PATH]`:
 * cache-miss QPS and latency of egressd forwarding to the same local unbound over plain
 * UDP, DNS over TLS (unbound's tls-port) and DNS over HTTPS (its https-port), in one run
 * (issue #14). Every query is a distinct name under `bench.example` (unbound answers them
 * all from a redirect zone), so every one is a cache miss that goes upstream. egressd
 * (dist/cli.js; `npm run build` first) runs on core 0, dnsperf and unbound share core 1.
 * Transports alternate per round (udp, tls, https, then reversed), the best round of each
 * counting. After each run the daemon's own counters are read: TLS handshakes
 * (`egressd_dns_upstream_connections_total`), connections ended
 * (`egressd_dns_upstream_closed_total`) and failed tries, and each run is checked: every
 * query answered NOERROR, and every one a cache miss.
 * Bars: DoT ≥ 0.7 × UDP QPS, DoH ≥ 0.5 × UDP QPS, at most one handshake per pooled
 * connection (no connection ended during the run).
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MISS_ZONE, writeMissFile } from './dns/corpus.js'
import { runDnsperf, type DnsperfResult } from './dns/dnsperf.js'
import { freePort, metric, scrape, startEgressd, type Managed } from './dns/servers.js'
import { DOH_LIMITS } from '../src/dns/upstream-https.js'
import { DOT_LIMITS } from '../src/dns/upstream-tls.js'
import { startUnbound, type Unbound } from '../test/helpers/unbound.js'

type Transport = 'udp' | 'tls' | 'https'
const ALL: readonly Transport[] = ['udp', 'tls', 'https']
let TRANSPORTS: readonly Transport[] = ALL

interface Run {
  transport: Transport
  round: number
  qps: number
  p50Ms: number
  p99Ms: number
  completed: number
  noerror: number
  misses: number
  handshakes: number
  closed: number
  errors: number
  /** Non-zero series of the failed tries and ended connections, by reason. */
  reasons: Record<string, number>
  egressdCpuUsPerQuery: number
}

function opt(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : fallback
}

function upstreamFor(t: Transport, ub: Unbound): string {
  if (t === 'udp') return `127.0.0.1:${ub.port}`
  if (t === 'tls') return `tls://127.0.0.1:${ub.tlsPort}#bench.test`
  return `https://bench.test:${ub.httpsPort}/dns-query#127.0.0.1`
}

export async function run(args: string[]): Promise<void> {
  const seconds = opt(args, '--seconds', 20)
  const rounds = opt(args, '--rounds', 2)
  const outstanding = opt(args, '--outstanding', 100)
  const only = args.indexOf('--only')
  TRANSPORTS = only >= 0 ? (args[only + 1]!.split(',') as Transport[]) : ALL
  const ci = args.indexOf('--cli')
  const root = resolve(fileURLToPath(new URL('../..', import.meta.url)))
  const cli = ci >= 0 ? resolve(args[ci + 1]!) : join(root, 'dist/cli.js')
  if (!existsSync(cli)) throw new Error(`${cli} is missing: npm run build first`)
  const dir = mkdtempSync(join(tmpdir(), 'egressd-bench-upstreams-'))
  const ub = await startUnbound({ zone: `${MISS_ZONE}.`, zoneType: 'redirect', records: [`${MISS_ZONE}. 300 IN A 192.0.2.1`], certNames: ['bench.test'] })
  // unbound shares core 1 with dnsperf; egressd has core 0 to itself.
  const runs: Run[] = []
  try {
    execFileSync('taskset', ['-a', '-pc', '1', String(ub.pid)], { stdio: 'ignore' })
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? TRANSPORTS : [...TRANSPORTS].reverse()
      for (const transport of order) runs.push(await once(transport, round, ub, dir, cli, seconds, outstanding))
    }
  } finally {
    await ub.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  for (const r of runs) console.log(JSON.stringify({ bench: 'dns-upstreams', ...r }))
  const best = (t: Transport) => runs.filter((r) => r.transport === t).sort((a, b) => b.qps - a.qps)[0]!
  if (TRANSPORTS.length < 3) return
  const udp = best('udp')
  console.log(`\nmachine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ${seconds} s runs, ${rounds} round(s), ${outstanding} outstanding`)
  console.log('transport | best QPS | ×UDP | p50 ms | p99 ms | handshakes | conns ended | failed tries | egressd CPU µs/query')
  for (const t of TRANSPORTS) {
    const b = best(t)
    console.log(`${t} | ${b.qps.toFixed(0)} | ${(b.qps / udp.qps).toFixed(2)} | ${b.p50Ms.toFixed(2)} | ${b.p99Ms.toFixed(2)} | ${b.handshakes} | ${b.closed} | ${b.errors} | ${b.egressdCpuUsPerQuery.toFixed(1)}`)
  }
  const dot = best('tls')
  const doh = best('https')
  const bars = [
    [`DoT QPS ≥ 0.7 × UDP`, dot.qps >= 0.7 * udp.qps, `${(dot.qps / udp.qps).toFixed(2)}`],
    [`DoH QPS ≥ 0.5 × UDP`, doh.qps >= 0.5 * udp.qps, `${(doh.qps / udp.qps).toFixed(2)}`],
    [`DoT: ≤ 1 handshake per pooled connection (pool ≤ ${DOT_LIMITS.connections}), none ended`,
      runs.every((r) => r.transport !== 'tls' || (r.handshakes <= DOT_LIMITS.connections && r.closed === 0)), runs.filter((r) => r.transport === 'tls').map((r) => r.handshakes).join(', ')],
    [`DoH: ≤ 1 handshake per pooled session (≤ ${DOH_LIMITS.sessions}), none ended`,
      runs.every((r) => r.transport !== 'https' || (r.handshakes <= DOH_LIMITS.sessions && r.closed === 0)), runs.filter((r) => r.transport === 'https').map((r) => r.handshakes).join(', ')],
  ] as const
  for (const [name, ok, value] of bars) console.log(`bar ${ok ? 'met' : 'MISSED'}: ${name} (${value})`)
}

async function once(transport: Transport, round: number, ub: Unbound, dir: string, cli: string, seconds: number, outstanding: number): Promise<Run> {
  const port = await freePort()
  const metricsPort = await freePort()
  const file = join(dir, `miss-${transport}-${round}.txt`)
  // Enough distinct names for the run at 60 k QPS: none is ever asked twice.
  await writeMissFile(file, Math.max(200_000, seconds * 60_000), `${transport}${round}`)
  const e: Managed = await startEgressd({
    dir,
    cpu: '0',
    port,
    upstreamPort: ub.port,
    rules: [],
    cli,
    metricsPort,
    sniPort: await freePort(),
    nodeArgs: [],
    config: `dns:
  listen: ["127.0.0.1:${port}"]
  upstreams: ["${upstreamFor(transport, ub)}"]
${transport === 'udp' ? '' : `  upstream_ca_file: "${ub.caFile}"
`}  rebind_protection: false
  rate_limit: { qps: 0 }
sni:
  listen: ["127.0.0.1:${await freePort()}"]
metrics:
  listen: "127.0.0.1:${metricsPort}"
log:
  level: warn
allow: ["*.bench.example"]
`,
  })
  try {
    const cpu0 = e.cpuSeconds()
    const r: DnsperfResult = await runDnsperf({ port, file, seconds, maxRuns: 1, outstanding, percentiles: true, cpu: '1' })
    const cpu = e.cpuSeconds() - cpu0
    const m = await scrape(metricsPort)
    return {
      transport,
      round,
      qps: r.qps,
      p50Ms: r.p50Ms ?? NaN,
      p99Ms: r.p99Ms ?? NaN,
      completed: r.completed,
      noerror: r.rcodes.NOERROR ?? 0,
      misses: metric(m, 'egressd_dns_cache_misses_total'),
      handshakes: metric(m, 'egressd_dns_upstream_connections_total'),
      closed: metric(m, 'egressd_dns_upstream_closed_total'),
      errors: metric(m, 'egressd_dns_upstream_errors_total'),
      reasons: Object.fromEntries([...m].filter(([k, v]) => v > 0 && /^egressd_dns_upstream_(errors|closed)_total\{/.test(k)).map(([k, v]) => [k.replace(/,?upstream="[^"]*"/, ''), v])),
      egressdCpuUsPerQuery: (cpu / Math.max(r.completed, 1)) * 1e6,
    }
  } finally {
    await e.stop()
  }
}
