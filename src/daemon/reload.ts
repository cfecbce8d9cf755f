/**
 * A reload's heavy half off the event loop: a worker thread (reload-worker.ts) reads,
 * parses and validates the file and compiles every policy list the running set does
 * not hold; it hands back the configuration with its entry lists packed
 * (src/policy/packed-entries.ts) and each compiled trie as typed arrays, all of them
 * transferred, not copied. What is left for the event loop (compileConfig with these
 * policies, then the swap) does not grow with the policy: at 1 M rules, a reload on the
 * event loop stalled DNS for seconds (bench/RESULTS.md, reload section).
 */
import { Worker } from 'node:worker_threads'
import { ConfigError, ConfigErrors, EgressdError } from '../errors.js'
import type { LoadOptions } from '../config/load.js'
import type { Config } from '../config/types.js'
import { Policy } from '../policy/match.js'
import { entriesKey, isPacked, PACKED, unpackEntries } from '../policy/packed-entries.js'
import type { CompiledTrie } from '../policy/trie.js'
import type { PolicyEntry } from '../policy/types.js'
import type { Precompiled } from './compiled-config.js'

export interface WorkerRequest {
  /** Matches the reply to its request. */
  readonly id: number
  readonly file: string
  readonly load?: LoadOptions
  /** Content keys of the policies the running daemon holds: not compiled again. */
  readonly known: readonly string[]
}

export type WorkerReply = { id: number } & (
  | { ok: true; config: Config; tries: { key: string; trie: CompiledTrie }[]; hash: string; warnings: string[] }
  | { ok: false; errors?: { file: string; line: number; col: number; detail: string }[]; fatal?: string }
)

/** What the worker prepared: the configuration, its precompiled policies, and the warnings to log. */
export interface Prepared {
  readonly config: Config
  readonly pre: Precompiled
  readonly warnings: readonly string[]
  /** Event-loop time spent turning the worker's message into Policies (assemble), ms. */
  readonly assembleMs: number
}

/** The worker failed in a way that is not a configuration error (a bug, or it could not start). */
export class ReloadWorkerError extends EgressdError {
  constructor(message: string) {
    super('ERELOAD', message)
  }
}

/** Bound on one request: a configuration that takes longer is a failed reload, not a hung one. */
const REQUEST_TIMEOUT_MS = 300_000

/**
 * How long the worker stays after its last request. A burst of reloads (an operator
 * editing, a tool rewriting the file, 50 SIGHUPs in a test) reuses one thread instead of
 * starting one per SIGHUP: the e2e test of 50 reloads took 6.5 s with a thread per
 * reload and 2.7 s with one warm thread, and every thread start is one more chance to
 * meet a runtime bug in start-up. After the burst the thread and its heap, which held
 * the parsed file, are returned. An idle worker costs about 10 MB of RSS on Node 20 and
 * 18 MB on Node 24 (measured here, 2026-12-07).
 */
export const WORKER_IDLE_MS = 30_000

/**
 * The worker's script beside this module: `.js` when built, `.ts` when this module runs
 * from source under a TypeScript loader (the tests), which the worker inherits through
 * execArgv.
 */
function workerUrl(): URL {
  const here = import.meta.url
  return new URL(here.endsWith('.ts') ? './reload-worker.ts' : './reload-worker.js', here)
}

interface Pending {
  resolve(p: Prepared): void
  reject(e: unknown): void
  timer: NodeJS.Timeout
}

/**
 * One worker thread kept warm between requests (WORKER_IDLE_MS), started on first use.
 * Requests are answered in order; the Daemon sends one at a time. The thread is unref'd:
 * it never keeps the process alive, and close() ends it at once.
 */
export class ReloadWorker {
  private worker: Worker | null = null
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private idleTimer: NodeJS.Timeout | null = null
  /** Threads started so far (for tests and the log). */
  started = 0

  constructor(private readonly idleMs = WORKER_IDLE_MS) {}

  /**
   * Loads and compiles `file` in the worker. Resolves with the configuration and its
   * precompiled policies; rejects with ConfigErrors (file:line:col each) for a bad file,
   * ReloadWorkerError for anything else.
   */
  prepare(file: string, load: LoadOptions | undefined, known: readonly string[]): Promise<Prepared> {
    return new Promise((resolve, reject) => {
      let worker: Worker
      try {
        worker = this.thread()
      } catch (e) {
        reject(new ReloadWorkerError(`cannot start the reload worker: ${(e as Error).message}`))
        return
      }
      if (this.idleTimer !== null) clearTimeout(this.idleTimer)
      this.idleTimer = null
      const id = this.nextId++
      const timer = setTimeout(() => {
        // A stuck thread is not reused: the next request starts a fresh one.
        this.fail(new ReloadWorkerError(`the reload worker took more than ${REQUEST_TIMEOUT_MS} ms`))
      }, REQUEST_TIMEOUT_MS)
      this.pending.set(id, { resolve, reject, timer })
      worker.postMessage({ id, file, load, known } satisfies WorkerRequest)
    })
  }

  /** Ends the thread now; requests in flight reject. */
  close(): Promise<void> {
    const w = this.worker
    this.fail(new ReloadWorkerError('the reload worker was closed'))
    return w === null ? Promise.resolve() : w.terminate().then(() => {})
  }

  private thread(): Worker {
    if (this.worker !== null) return this.worker
    const worker = new Worker(workerUrl())
    worker.unref()
    this.started++
    worker.on('message', (reply: WorkerReply) => this.settle(reply))
    worker.once('error', (err) => {
      if (this.worker === worker) this.fail(new ReloadWorkerError(`the reload worker failed: ${err.message}`))
    })
    worker.once('exit', (code) => {
      if (this.worker === worker) this.fail(new ReloadWorkerError(`the reload worker exited (${code}) without an answer`))
    })
    this.worker = worker
    return worker
  }

  private settle(reply: WorkerReply): void {
    const p = this.pending.get(reply.id)
    if (p === undefined) return
    this.pending.delete(reply.id)
    clearTimeout(p.timer)
    if (this.pending.size === 0) this.idleSoon()
    if (reply.ok) {
      try {
        const started = performance.now()
        const prepared = assemble(reply)
        p.resolve({ ...prepared, assembleMs: performance.now() - started })
      } catch (e) {
        p.reject(e)
      }
    } else if (reply.errors !== undefined) p.reject(new ConfigErrors(reply.errors.map((e) => new ConfigError(e.file, e.line, e.col, e.detail))))
    else p.reject(new ReloadWorkerError(reply.fatal ?? 'the reload worker failed'))
  }

  private idleSoon(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null
      if (this.pending.size > 0 || this.worker === null) return
      const w = this.worker
      this.worker = null
      void w.terminate()
    }, this.idleMs)
    this.idleTimer.unref()
  }

  /** Rejects every request in flight and drops the thread. */
  private fail(error: ReloadWorkerError): void {
    const w = this.worker
    this.worker = null
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.idleTimer = null
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(error)
    }
    this.pending.clear()
    if (w !== null) void w.terminate()
  }
}

/** Turns the worker's message back into a Config and Policies; cost independent of the policy size. */
function assemble(reply: WorkerReply & { ok: true }): Omit<Prepared, 'assembleMs'> {
  const lists = new Map<unknown, readonly PolicyEntry[]>()
  const unpack = (x: readonly PolicyEntry[] | undefined): readonly PolicyEntry[] | undefined => {
    if (!isPacked(x)) return x
    let list = lists.get(x)
    if (list === undefined) {
      list = unpackEntries(x[PACKED])
      lists.set(x, list)
    }
    return list
  }
  const c = reply.config
  const config: Config = {
    ...c,
    policy: unpack(c.policy)!,
    report: unpack(c.report),
    groups: c.groups?.map((g) => ({ ...g, policy: unpack(g.policy)!, report: unpack(g.report)! })),
    dns: { ...c.dns, rebindExempt: unpack(c.dns.rebindExempt)! },
  }
  // Each trie goes with the entry list of its key (the same content wherever it appears).
  const byKey = new Map<string, readonly PolicyEntry[]>()
  // Unpacked lists carry their key: entriesKey reads it without stringifying.
  for (const list of lists.values()) byKey.set(entriesKey(list), list)
  const policies = new Map<string, Policy>()
  for (const { key, trie } of reply.tries) {
    const entries = byKey.get(key)
    if (entries === undefined) throw new ReloadWorkerError(`the reload worker compiled a list it did not send (${key})`)
    policies.set(key, new Policy(trie, entries))
  }
  return { config, pre: { policies, hash: reply.hash }, warnings: reply.warnings }
}
