import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { createSocket } from 'node:dgram'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** The built CLI; `npm test` runs `npm run build` before tap. */
export const CLI = join(process.cwd(), 'dist', 'cli.js')

export interface LogLine {
  level: string
  msg: string
  [key: string]: unknown
}

export interface RunningDaemon {
  proc: ChildProcess
  file: string
  logs: LogLine[]
  stderr: () => string
  /** Resolves with the first log line whose msg matches. */
  waitForLog(msg: string | RegExp, timeoutMs?: number): Promise<LogLine>
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>
  exited: Promise<number | null>
}

/**
 * A port that is free on 127.0.0.1 for both TCP and UDP right now. Racy in theory; the
 * daemon binds within milliseconds and tests run at most two at a time.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer()
      s.once('error', reject)
      s.listen(0, host, () => {
        const p = (s.address() as { port: number }).port
        s.close(() => resolve(p))
      })
    })
    const udpFree = await new Promise<boolean>((resolve) => {
      const u = createSocket(host.includes(':') ? 'udp6' : 'udp4')
      u.once('error', () => resolve(false))
      u.bind(port, host, () => u.close(() => resolve(true)))
    })
    if (udpFree) return port
  }
  throw new Error('no free port')
}

/**
 * Daemons still running when the test process ends (a tap timeout, a crash) are
 * killed, so none outlives its test holding ports.
 */
const live = new Set<ChildProcess>()
function killLive(): void {
  for (const p of live) p.kill('SIGKILL')
}
process.once('exit', killLive)
process.once('SIGTERM', () => {
  killLive()
  process.exit(143)
})

/** Writes `configText` to a temp file and starts `egressd run -c` on it. */
export function startDaemon(configText: string, args: string[] = []): RunningDaemon {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-e2e-'))
  const file = join(dir, 'egressd.yaml')
  writeFileSync(file, configText)
  const proc = spawn(process.execPath, [CLI, 'run', '-c', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: LogLine[] = []
  const waiters: { re: string | RegExp; resolve: (l: LogLine) => void }[] = []
  let err = ''
  let buffered = ''
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  proc.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString()
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      let parsed: LogLine
      try {
        parsed = JSON.parse(line) as LogLine
      } catch {
        throw new Error(`daemon wrote a line that is not JSON: ${line}`)
      }
      logs.push(parsed)
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!
        if (typeof w.re === 'string' ? parsed.msg === w.re : w.re.test(parsed.msg)) {
          waiters.splice(i, 1)
          w.resolve(parsed)
        }
      }
    }
  })
  live.add(proc)
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      live.delete(proc)
      resolve(code)
    }),
  )
  return {
    proc,
    file,
    logs,
    stderr: () => err,
    exited,
    waitForLog(msg, timeoutMs = 10_000) {
      const seen = logs.find((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)))
      if (seen) return Promise.resolve(seen)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no log "${msg}" within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs)
        waiters.push({ re: msg, resolve: (l) => (clearTimeout(timer), resolve(l)) })
        void exited.then((code) => {
          clearTimeout(timer)
          reject(new Error(`daemon exited (${code}) before "${msg}"; stderr: ${err}`))
        })
      })
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000)
      const code = await exited
      clearTimeout(timer)
      return code
    },
  }
}
