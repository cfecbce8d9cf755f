/**
 * A child process inside a network namespace whose stdout is JSON lines: the built
 * egressd (`ip netns exec GW node dist/cli.js run -c FILE`, the namespaced variant of
 * test/helpers/daemon.ts) and the world's servers (world.mjs).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'

/** The built CLI; `npm test` runs `npm run build` before tap. */
export const CLI = join(process.cwd(), 'dist', 'cli.js')

export type JsonLine = Record<string, unknown>

export interface NsProcess {
  readonly proc: ChildProcess
  /** Every line so far, in order; lines that are not JSON are kept as `{ text }`. */
  readonly lines: JsonLine[]
  stderr(): string
  /** The first line (seen or future) for which `match` is true. */
  waitFor(match: (l: JsonLine) => boolean, what: string, timeoutMs?: number): Promise<JsonLine>
  /** SIGTERM, SIGKILL after `graceMs`; the exit code. Safe to call twice. */
  stop(graceMs?: number): Promise<number | null>
  readonly exited: Promise<number | null>
}

/**
 * `ip netns exec` execs the command in place, so the pid is node's and signals reach it
 * directly. NODE_OPTIONS is dropped: tap's loader hooks are for its own TypeScript
 * processes, and these children run plain JavaScript.
 */
export function spawnInNs(ns: string, argv: string[]): NsProcess {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { stdio: ['pipe', 'pipe', 'pipe'], env })
  const lines: JsonLine[] = []
  const waiters: Array<{ match: (l: JsonLine) => boolean; resolve: (l: JsonLine) => void }> = []
  let err = ''
  let buffered = ''
  proc.stderr!.on('data', (d: Buffer) => {
    if (err.length < 64 * 1024) err += d.toString()
  })
  proc.stdout!.on('data', (d: Buffer) => {
    buffered += d.toString()
    let nl: number
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const text = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      let line: JsonLine
      try {
        line = JSON.parse(text) as JsonLine
      } catch {
        line = { text }
      }
      lines.push(line)
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.match(line)) waiters.splice(i, 1)[0]!.resolve(line)
      }
    }
  })
  // A closed stdin is world.mjs's signal to stop if this test process dies first.
  proc.stdin!.on('error', () => {})
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  return {
    proc,
    lines,
    stderr: () => err,
    exited,
    waitFor(match, what, timeoutMs = 10_000) {
      const seen = lines.find(match)
      if (seen) return Promise.resolve(seen)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs)
        waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) })
        void exited.then((code) => {
          clearTimeout(timer)
          reject(new Error(`process exited (${code}) before ${what}; stderr: ${err}`))
        })
      })
    },
    async stop(graceMs = 10_000) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs)
      const code = await exited
      clearTimeout(timer)
      return code
    },
  }
}

/** egressd's log lines have `msg`; this waits for one. */
export const logMsg = (msg: string) => (l: JsonLine) => l.msg === msg
