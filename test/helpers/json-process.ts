import type { ChildProcess } from 'node:child_process'

export type JsonLine = Record<string, unknown>

/** A child process whose stdout is JSON lines (egressd's log, the netns world's reports). */
export interface JsonProcess {
  readonly proc: ChildProcess
  /** Every line so far, in order; in lenient mode a line that is not JSON is kept as `{ text }`. */
  readonly lines: JsonLine[]
  stderr(): string
  readonly exited: Promise<number | null>
  /** The first line (seen or future) for which `match` is true; rejects on timeout or exit. */
  waitFor(match: (l: JsonLine) => boolean, what: string, timeoutMs?: number): Promise<JsonLine>
  /** SIGTERM, SIGKILL after `graceMs`; the exit code. Safe to call twice. */
  stop(graceMs?: number): Promise<number | null>
}

/**
 * Children still running when the test process ends (a tap timeout, a crash) are
 * killed, so none outlives its test holding ports or namespaces.
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

/** `strict`: a stdout line that is not JSON throws (egressd must only ever print JSON lines). */
export function watchJsonLines(proc: ChildProcess, strict: boolean): JsonProcess {
  const lines: JsonLine[] = []
  const waiters: { match: (l: JsonLine) => boolean; resolve: (l: JsonLine) => void }[] = []
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
        if (strict) throw new Error(`process wrote a line that is not JSON: ${text}`)
        line = { text }
      }
      lines.push(line)
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.match(line)) waiters.splice(i, 1)[0]!.resolve(line)
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
