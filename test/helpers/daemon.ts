import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { watchJsonLines } from './json-process.js'
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
 * Writes `configText` to a temp file and starts `egressd run -c` on it. `withoutTapHooks`:
 * tap's process-info hooks follow every child it spawns (its spawn wrapper puts
 * NODE_OPTIONS back whatever env is given) and install signal handlers before the
 * daemon's own; `env -u` strips them after that wrapper, for tests about signals.
 */
export function startDaemon(configText: string, args: string[] = [], opts: { withoutTapHooks?: boolean } = {}): RunningDaemon {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-e2e-'))
  const file = join(dir, 'egressd.yaml')
  writeFileSync(file, configText)
  const argv = [process.execPath, CLI, 'run', '-c', file, ...args]
  const proc = opts.withoutTapHooks
    ? spawn('env', ['-u', 'NODE_OPTIONS', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
  const p = watchJsonLines(proc, true)
  return {
    proc,
    file,
    logs: p.lines as LogLine[],
    stderr: p.stderr,
    exited: p.exited,
    waitForLog: (msg, timeoutMs) =>
      p.waitFor((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(String(l.msg))), `log "${msg}"`, timeoutMs) as Promise<LogLine>,
    stop: () => p.stop(),
  }
}

/** Runs a tool (curl, dig …) to completion; never rejects: the exit code says how it went. */
export function runCommand(cmd: string, args: string[], timeoutMs = 15_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}
