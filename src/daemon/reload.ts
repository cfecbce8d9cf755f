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
  readonly file: string
  readonly load?: LoadOptions
  /** Content keys of the policies the running daemon holds: not compiled again. */
  readonly known: readonly string[]
}

export type WorkerReply =
  | { ok: true; config: Config; tries: { key: string; trie: CompiledTrie }[]; hash: string }
  | { ok: false; errors?: { file: string; line: number; col: number; detail: string }[]; fatal?: string }

/** The worker failed in a way that is not a configuration error (a bug, or it could not start). */
export class ReloadWorkerError extends EgressdError {
  constructor(message: string) {
    super('ERELOAD', message)
  }
}

/** Bound on one worker's run: a configuration that takes longer is a failed reload, not a hung one. */
const WORKER_TIMEOUT_MS = 300_000

/**
 * The worker's script beside this module: `.js` when built, `.ts` when this module runs
 * from source under a TypeScript loader (the tests), which the worker inherits through
 * execArgv.
 */
function workerUrl(): URL {
  const here = import.meta.url
  return new URL(here.endsWith('.ts') ? './reload-worker.ts' : './reload-worker.js', here)
}

/**
 * Loads and compiles `file` in a worker thread. Resolves with the configuration and its
 * precompiled policies; rejects with ConfigErrors (file:line:col each) for a bad file,
 * ReloadWorkerError for anything else.
 */
export function prepareReload(file: string, load: LoadOptions | undefined, known: readonly string[]): Promise<{ config: Config; pre: Precompiled }> {
  return new Promise((resolve, reject) => {
    let worker: Worker
    try {
      worker = new Worker(workerUrl(), { workerData: { file, load, known } satisfies WorkerRequest })
    } catch (e) {
      reject(new ReloadWorkerError(`cannot start the reload worker: ${(e as Error).message}`))
      return
    }
    let settled = false
    const finish = (fn: () => void): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
      void worker.terminate()
    }
    const timer = setTimeout(() => finish(() => reject(new ReloadWorkerError(`the reload worker took more than ${WORKER_TIMEOUT_MS} ms`))), WORKER_TIMEOUT_MS)
    worker.once('message', (reply: WorkerReply) =>
      finish(() => {
        if (reply.ok) resolve(assemble(reply))
        else if (reply.errors !== undefined) reject(new ConfigErrors(reply.errors.map((e) => new ConfigError(e.file, e.line, e.col, e.detail))))
        else reject(new ReloadWorkerError(reply.fatal ?? 'the reload worker failed'))
      }),
    )
    worker.once('error', (err) => finish(() => reject(new ReloadWorkerError(`the reload worker failed: ${err.message}`))))
    worker.once('exit', (code) => finish(() => reject(new ReloadWorkerError(`the reload worker exited (${code}) without an answer`))))
  })
}

/** Turns the worker's message back into a Config and Policies; cost independent of the policy size. */
function assemble(reply: WorkerReply & { ok: true }): { config: Config; pre: Precompiled } {
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
  return { config, pre: { policies, hash: reply.hash } }
}
