/**
 * Runs dnsperf (pinned with taskset) and reads its report. dnsperf 2.10 prints only the
 * average latency, so percentiles come from its `-v` per-response lines
 * (`> NOERROR name A 0.000123`), folded into a 1 µs histogram as they stream by: memory
 * stays fixed however long the run.
 */
import { spawn } from 'node:child_process'
import { pinned } from './pin.js'

export interface DnsperfOptions {
  port: number
  file: string
  seconds: number
  /** Passes through the file at most this many times (`-n`); unset: cycle until `seconds`. */
  maxRuns?: number
  /** `-Q`: rate limit in queries per second. */
  rate?: number
  outstanding: number
  /** Collect per-response latencies (`-v`). */
  percentiles?: boolean
  cpu: string
  /** Per-query timeout in seconds (`-t`). */
  timeout?: number
}

export interface DnsperfResult {
  sent: number
  completed: number
  lost: number
  qps: number
  runtime: number
  rcodes: Record<string, number>
  avgMs: number
  minMs: number
  maxMs: number
  requestBytes: number
  responseBytes: number
  /** Present with `percentiles`. */
  p50Ms?: number
  p99Ms?: number
  p999Ms?: number
  /** Responses over the histogram's 1 s range, counted at 1 s. */
  overflow?: number
  raw: string
}

const HIST_US = 1_000_000

function num(text: string, re: RegExp): number {
  const m = re.exec(text)
  return m ? Number(m[1]) : NaN
}

/** Parses dnsperf's closing statistics; pure so a captured report can be checked. */
export function parseReport(text: string): Omit<DnsperfResult, 'raw'> {
  const rcodes: Record<string, number> = {}
  const codes = /Response codes:\s+([^\n]*)/.exec(text)
  if (codes) {
    for (const m of codes[1]!.matchAll(/([A-Z]+) (\d+) \(/g)) rcodes[m[1]!] = Number(m[2])
  }
  const avg = /Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)/.exec(text)
  const sizes = /Average packet size:\s+request (\d+), response (\d+)/.exec(text)
  return {
    sent: num(text, /Queries sent:\s+(\d+)/),
    completed: num(text, /Queries completed:\s+(\d+)/),
    lost: num(text, /Queries lost:\s+(\d+)/),
    qps: num(text, /Queries per second:\s+([\d.]+)/),
    runtime: num(text, /Run time \(s\):\s+([\d.]+)/),
    rcodes,
    avgMs: avg ? Number(avg[1]) * 1000 : NaN,
    minMs: avg ? Number(avg[2]) * 1000 : NaN,
    maxMs: avg ? Number(avg[3]) * 1000 : NaN,
    requestBytes: sizes ? Number(sizes[1]) : NaN,
    responseBytes: sizes ? Number(sizes[2]) : 0,
  }
}

function percentile(hist: Uint32Array, total: number, q: number): number {
  const rank = Math.ceil(total * q)
  let seen = 0
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i]!
    if (seen >= rank) return i / 1000
  }
  return HIST_US / 1000
}

export function runDnsperf(o: DnsperfOptions): Promise<DnsperfResult> {
  const args = ['dnsperf', '-s', '127.0.0.1', '-p', String(o.port), '-d', o.file,
    '-l', String(o.seconds), '-q', String(o.outstanding), '-t', String(o.timeout ?? 2)]
  if (o.maxRuns !== undefined) args.push('-n', String(o.maxRuns))
  if (o.rate !== undefined) args.push('-Q', String(Math.round(o.rate)))
  if (o.percentiles) args.push('-v')
  const [cmd, argv] = pinned(o.cpu, args)
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  const hist = o.percentiles ? new Uint32Array(HIST_US + 1) : null
  let count = 0
  let report = ''
  let partial = ''
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 64 * 1024) stderr += d.toString()
  })
  proc.stdout.on('data', (d: Buffer) => {
    const text = partial + d.toString('latin1')
    const end = text.lastIndexOf('\n')
    partial = text.slice(end + 1)
    if (end < 0) return
    let start = 0
    while (start <= end) {
      const nl = text.indexOf('\n', start)
      if (hist && text.charCodeAt(start) === 62 /* > */) {
        const sp = text.lastIndexOf(' ', nl)
        const us = Math.round(Number(text.slice(sp + 1, nl)) * 1e6)
        if (us >= 0) {
          hist[us < HIST_US ? us : HIST_US]!++
          count++
        }
      } else if (report.length < 256 * 1024) {
        report += text.slice(start, nl + 1)
      }
      start = nl + 1
    }
  })
  // Bounded even if dnsperf hangs on a dead server.
  const killer = setTimeout(() => proc.kill('SIGKILL'), (o.seconds + (o.timeout ?? 2) + 20) * 1000)
  return new Promise((resolve, reject) => {
    proc.once('error', (e) => (clearTimeout(killer), reject(e)))
    proc.once('close', (code) => {
      clearTimeout(killer)
      report += partial
      if (code !== 0) {
        reject(new Error(`dnsperf exited ${code}: ${stderr.trim()}\n${report.slice(-2000)}`))
        return
      }
      const parsed = parseReport(report)
      const result: DnsperfResult = { ...parsed, raw: report }
      if (hist && count > 0) {
        result.p50Ms = percentile(hist, count, 0.5)
        result.p99Ms = percentile(hist, count, 0.99)
        result.p999Ms = percentile(hist, count, 0.999)
        result.overflow = hist[HIST_US]!
      }
      resolve(result)
    })
  })
}
