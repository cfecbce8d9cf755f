/**
 * Starts the processes of the DNS benchmark, each pinned with taskset: the servers under
 * test (egressd, dnsmasq) and the fake upstream. Every process is stopped by its own pid
 * and killed if it does not exit within a few seconds.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { get } from 'node:http'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { dnsmasqServerLines, egressdAllowYaml, type Rule } from './corpus.js'
import { pinned } from './pin.js'
import { waitAnswering } from './probe.js'

export interface Managed {
  readonly label: string
  readonly pid: number
  readonly port: number
  /** Resident set size in KiB, from `ps -o rss`; NaN once the process is gone. */
  rssKb(): number
  /** CPU seconds (user + system, every thread) used so far; NaN once the process is gone. */
  cpuSeconds(): number
  /** The system (kernel) part of cpuSeconds. */
  sysSeconds(): number
  /**
   * Seconds its threads spent runnable but waiting for a core (schedstat), summed: time
   * taken by other work on the machine, not by the benchmark.
   */
  waitSeconds(): number
  alive(): boolean
  /** Lines the process wrote, newest last, bounded. */
  output(): string[]
  stop(): Promise<number | null>
}

/** A port free for both TCP and UDP on 127.0.0.1 at the time of asking. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port
        s.close(() => resolve(p))
      })
    })
    const udpFree = await new Promise<boolean>((resolve) => {
      const u = createSocket('udp4')
      u.once('error', () => resolve(false))
      u.bind(port, '127.0.0.1', () => u.close(() => resolve(true)))
    })
    if (udpFree) return port
  }
  throw new Error('no free port on 127.0.0.1')
}

let ticks = 0
function clockTicks(): number {
  if (ticks === 0) ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  return ticks
}

/** [user, system] CPU seconds of every thread of `pid`, from /proc; NaN when it is gone. */
function cpuTimes(pid: number): [number, number] {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return [Number(f[11]) / clockTicks(), Number(f[12]) / clockTicks()]
  } catch {
    return [NaN, NaN]
  }
}

function manage(label: string, proc: ChildProcess, port: number): Managed {
  const lines: string[] = []
  let partial = ''
  const keep = (d: Buffer): void => {
    const text = partial + d.toString()
    const parts = text.split('\n')
    partial = parts.pop()!
    for (const l of parts) {
      lines.push(l)
      if (lines.length > 200) lines.shift()
    }
  }
  proc.stdout?.on('data', keep)
  proc.stderr?.on('data', keep)
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  return {
    label,
    pid: proc.pid!,
    port,
    rssKb() {
      try {
        return Number(execFileSync('ps', ['-o', 'rss=', '-p', String(proc.pid)], { encoding: 'utf8' }).trim())
      } catch {
        return NaN
      }
    },
    cpuSeconds() {
      const [user, sys] = cpuTimes(proc.pid!)
      return user + sys
    },
    sysSeconds: () => cpuTimes(proc.pid!)[1],
    waitSeconds() {
      try {
        let ns = 0
        for (const t of readdirSync(`/proc/${proc.pid}/task`)) {
          ns += Number(readFileSync(`/proc/${proc.pid}/task/${t}/schedstat`, 'utf8').split(' ')[1])
        }
        return ns / 1e9
      } catch {
        return NaN
      }
    },
    alive: () => proc.exitCode === null && proc.signalCode === null,
    output: () => (partial ? [...lines, partial] : lines.slice()),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000)
      const code = await exited
      clearTimeout(timer)
      return code
    },
  }
}

export interface ServerOptions {
  dir: string
  cpu: string
  port: number
  upstreamPort: number
  rules: readonly Rule[]
}

/** Same knobs for both servers where they exist; dnsmasq's cache is sized to hold the hit set. */
export const DNSMASQ_CACHE_SIZE = 10_000
export const DNSMASQ_FORWARD_MAX = 1_000

export async function startDnsmasq(o: ServerOptions): Promise<Managed> {
  const conf = join(o.dir, `dnsmasq-${o.rules.length}.conf`)
  writeFileSync(conf, [
    `port=${o.port}`,
    'listen-address=127.0.0.1',
    'bind-interfaces',
    'no-resolv',
    'no-hosts',
    'user=root',
    'pid-file=',
    `cache-size=${DNSMASQ_CACHE_SIZE}`,
    `dns-forward-max=${DNSMASQ_FORWARD_MAX}`,
    'log-facility=-',
    // Allow-only: NXDOMAIN for every name that no server= line below claims.
    'address=/#/',
    '',
  ].join('\n') + dnsmasqServerLines(o.rules, `127.0.0.1#${o.upstreamPort}`))
  const [cmd, argv] = pinned(o.cpu, ['dnsmasq', '--keep-in-foreground', `--conf-file=${conf}`])
  const proc = spawn(cmd, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const m = manage('dnsmasq', proc, o.port)
  if (!(await waitAnswering(o.port, 10_000))) {
    await m.stop()
    throw new Error(`dnsmasq did not answer on ${o.port}: ${m.output().slice(-10).join('\n')}`)
  }
  return m
}

export interface EgressdOptions extends ServerOptions {
  cli: string
  metricsPort: number
  sniPort: number
  nodeArgs: readonly string[]
  /** Default warn; info makes every blocked query up to the log limit write its line (bench/ui.ts). */
  logLevel?: string
  /** The whole configuration file instead of egressdConfig's (bench/dns-upstreams.ts). */
  config?: string
}

/** egressd's defaults, written out so the RSS run knows when its cache is full. */
export const EGRESSD_CACHE_ENTRIES = 100_000
export const EGRESSD_CACHE_BYTES = 64 * 1024 * 1024

export function egressdConfig(o: Omit<EgressdOptions, 'cli' | 'nodeArgs' | 'dir' | 'cpu'>): string {
  return `# written by bench/dns.ts
dns:
  listen: ["127.0.0.1:${o.port}"]
  upstreams: ["127.0.0.1:${o.upstreamPort}"]
  rebind_protection: false
  rate_limit: { qps: 0 }
  cache: { max_entries: ${EGRESSD_CACHE_ENTRIES}, max_bytes: ${EGRESSD_CACHE_BYTES} }
sni:
  listen: ["127.0.0.1:${o.sniPort}"]
metrics:
  listen: "127.0.0.1:${o.metricsPort}"
log:
  level: ${o.logLevel ?? 'warn'}
allow:
${egressdAllowYaml(o.rules)}`
}

export async function startEgressd(o: EgressdOptions): Promise<Managed> {
  const file = join(o.dir, `egressd-${o.rules.length}.yaml`)
  writeFileSync(file, o.config ?? egressdConfig(o))
  // The daemon logs "ready" at info, which log.level warn hides: readiness is probed instead.
  const [cmd, argv] = pinned(o.cpu, [process.execPath, ...o.nodeArgs, o.cli, 'run', '-c', file])
  const proc = spawn(cmd, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: o.dir,
  })
  const m = manage('egressd', proc, o.port)
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline && m.alive()) {
    if (await waitAnswering(o.port, 500)) return m
  }
  await m.stop()
  throw new Error(`egressd did not answer on ${o.port}: ${m.output().slice(-10).join('\n')}`)
}

export async function startFakeUpstream(cpu: string, nxdomain = false): Promise<Managed> {
  const script = fileURLToPath(new URL('./fake-upstream.js', import.meta.url))
  const [cmd, argv] = pinned(cpu, [process.execPath, script, '--exit-on-stdin-end', ...(nxdomain ? ['--nxdomain'] : [])])
  const proc = spawn(cmd, argv, {
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('fake upstream did not start')), 10_000)
    proc.stdout!.once('data', (d: Buffer) => {
      clearTimeout(timer)
      try {
        resolve((JSON.parse(d.toString().split('\n')[0]!) as { port: number }).port)
      } catch (e) {
        reject(e as Error)
      }
    })
    proc.once('exit', (code) => reject(new Error(`fake upstream exited ${code}`)))
  })
  return manage(nxdomain ? 'node-floor' : 'fake-upstream', proc, port)
}

/** Every sample from /metrics, keyed by series as printed (`name{labels}`). */
export function scrape(port: number): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => {
        const out = new Map<string, number>()
        for (const line of body.split('\n')) {
          if (line === '' || line.startsWith('#')) continue
          const sp = line.lastIndexOf(' ')
          out.set(line.slice(0, sp), Number(line.slice(sp + 1)))
        }
        resolve(out)
      })
    })
    req.on('timeout', () => req.destroy(new Error('metrics scrape timed out')))
    req.on('error', reject)
  })
}

/** Summed value of every series of `name` whose labels contain `labelPart` (or all). */
export function metric(samples: Map<string, number>, name: string, labelPart = ''): number {
  let sum = 0
  for (const [k, v] of samples) {
    if ((k === name || k.startsWith(name + '{')) && k.includes(labelPart)) sum += v
  }
  return sum
}
