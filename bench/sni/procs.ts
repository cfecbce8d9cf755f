/**
 * Child processes of the SNI benchmark: every one is pinned to a core, started with the
 * highest file-descriptor limit this machine grants, tracked, and killed at the end even
 * when the benchmark throws. Also reads a process's CPU time and RSS from /proc.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { createConnection } from 'node:net'

export interface Child {
  readonly name: string
  readonly proc: ChildProcess
  readonly pid: number
  /** Everything the child wrote to stdout and stderr, capped, for error messages. */
  output(): string
  exited: Promise<number | null>
}

const children: Child[] = []
let exitHookInstalled = false

/** The hard RLIMIT_NOFILE of this process: the most a child can raise its soft limit to without CAP_SYS_RESOURCE. */
export function hardNofile(): number {
  const out = execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()
  return out === 'unlimited' ? 1_048_576 : Number(out)
}

export const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100

/**
 * Niceness for this process and every child (null: leave it). On a machine shared with
 * other work, a negative value gives all targets alike a larger share of their cores.
 */
let niceness: number | null = null

/** Pins this process and all its threads (libuv pool included) to `core`, at `nice` if given. */
export function pinSelf(core: number, nice: number | null): void {
  niceness = nice
  try {
    execFileSync('taskset', ['-a', '-pc', String(core), String(process.pid)], { stdio: 'ignore' })
  } catch {
    // No taskset: the figures are still valid relative to each other, only noisier.
  }
  if (nice === null) return
  // Linux keeps a niceness per thread: renice every one (V8 and libuv threads included).
  for (const tid of readdirSync(`/proc/${process.pid}/task`)) {
    try {
      execFileSync('renice', ['-n', String(nice), '-p', tid], { stdio: 'ignore' })
    } catch {
      // Not permitted (not root): run at the inherited priority.
    }
  }
}

/**
 * Starts `cmd args` on `core` with the soft fd limit raised to the hard one. The bash,
 * taskset and nice wrappers exec into the command, so `pid` is the command's own process.
 */
export function spawnPinned(name: string, core: number, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    // Last resort when the benchmark dies without reaching its finally block.
    process.once('exit', () => {
      for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
    })
  }
  const nice = niceness === null ? [] : ['nice', '-n', String(niceness)]
  const proc = spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec taskset -c "$0" "$@"', String(core), ...nice, cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: env ?? process.env,
  })
  let out = ''
  const keep = (d: Buffer): void => {
    if (out.length < 64_000) out += d.toString()
  }
  proc.stdout!.on('data', keep)
  proc.stderr!.on('data', keep)
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  const child: Child = { name, proc, pid: proc.pid!, output: () => out, exited }
  children.push(child)
  return child
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child is gone. */
export async function stopChild(c: Child, graceMs = 5_000): Promise<number | null> {
  if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGTERM')
  const timer = setTimeout(() => c.proc.kill('SIGKILL'), graceMs)
  const code = await c.exited
  clearTimeout(timer)
  const i = children.indexOf(c)
  if (i >= 0) children.splice(i, 1)
  return code
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)))
}

export interface ProcSample {
  /** user + system CPU time in ms, all threads. */
  cpuMs: number
  rssKb: number
}

/** CPU time and RSS of `pid`, or null once it has exited. */
export function sample(pid: number): ProcSample | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 2 (comm) may hold spaces and parentheses: count fields from the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(f[11]) + Number(f[12]) // utime, stime (fields 14, 15)
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const m = /VmRSS:\s+(\d+) kB/.exec(status)
    return { cpuMs: (ticks * 1000) / CLOCK_TICKS, rssKb: m ? Number(m[1]) : 0 }
  } catch {
    return null
  }
}

/** Number of open file descriptors of `pid` (a check that idle connections really are held). */
export function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return -1
  }
}

/** Resolves once a TCP connect to 127.0.0.1:`port` succeeds; rejects when `child` exits or time runs out. */
export async function waitForPort(port: number, child: Child, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let dead = false
  void child.exited.then(() => (dead = true))
  while (Date.now() < deadline) {
    if (dead) throw new Error(`${child.name} exited (${child.proc.exitCode}) before listening on ${port}: ${child.output().slice(-2000)}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port })
      s.once('connect', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`${child.name} did not listen on ${port} within ${timeoutMs} ms: ${child.output().slice(-2000)}`)
}

/** One implementation for every benchmark: a port free on 127.0.0.1 for TCP and UDP. */
export { freePort } from '../dns/servers.js'
