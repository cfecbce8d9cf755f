/**
 * The reload's worker thread (src/daemon/reload.ts): reads, parses and validates the
 * configuration and compiles every policy list the running daemon does not already
 * hold, then posts the result with the tries' and lists' buffers transferred. Everything
 * proportional to the policy size happens here, off the event loop.
 */
import { parentPort } from 'node:worker_threads'
import { ConfigErrors } from '../errors.js'
import { allGroups } from '../config/groups.js'
import { loadConfig } from '../config/load.js'
import type { Config } from '../config/types.js'
import { compileTrie } from '../policy/compile.js'
import { entriesKey, packEntries, PACKED } from '../policy/packed-entries.js'
import type { CompiledTrie } from '../policy/trie.js'
import type { PolicyEntry } from '../policy/types.js'
import { fileHash } from './compiled-config.js'
import type { WorkerReply, WorkerRequest } from './reload.js'

function prepare(req: WorkerRequest): { reply: WorkerReply; transfer: ArrayBuffer[] } {
  let config: Config
  let warnings: string[]
  try {
    ;({ config, warnings } = loadConfig(req.file, req.load))
  } catch (e) {
    if (!(e instanceof ConfigErrors)) throw e
    return { reply: { id: req.id, ok: false, errors: e.errors.map((x) => ({ file: x.file, line: x.line, col: x.col, detail: x.detail })) }, transfer: [] }
  }
  const known = new Set(req.known)
  const transfer: ArrayBuffer[] = []
  const tries: { key: string; trie: CompiledTrie }[] = []
  const compile = (list: readonly PolicyEntry[]): void => {
    const key = entriesKey(list)
    if (known.has(key)) return
    known.add(key)
    const trie = compileTrie(list)
    tries.push({ key, trie })
    for (const a of [trie.nodes, trie.labelWords, trie.ruleEntry, trie.ruleRef]) transfer.push(a.buffer as ArrayBuffer)
  }
  for (const g of allGroups(config)) {
    compile(g.policy)
    if (g.report.length > 0) compile(g.report)
  }
  if (config.dns.rebindExempt.length > 0) compile(config.dns.rebindExempt)
  // Each list once, even when several places share it (a buffer is transferred once).
  const packed = new Map<readonly PolicyEntry[], unknown>()
  const pack = (list: readonly PolicyEntry[]): readonly PolicyEntry[] => {
    let m = packed.get(list)
    if (m === undefined) {
      const p = packEntries(list)
      transfer.push(...p.transfer)
      m = { [PACKED]: p.packed }
      packed.set(list, m)
    }
    return m as readonly PolicyEntry[]
  }
  const message: Config = {
    ...config,
    policy: pack(config.policy),
    report: config.report === undefined ? undefined : pack(config.report),
    groups: config.groups?.map((g) => ({ ...g, policy: pack(g.policy), report: pack(g.report) })),
    dns: { ...config.dns, rebindExempt: pack(config.dns.rebindExempt) },
  }
  return { reply: { id: req.id, ok: true, config: message, tries, hash: fileHash(config.file), warnings }, transfer }
}

// Not reniced: setpriority is outside the systemd unit's SystemCallFilter (@resources).
// Requests come one at a time from src/daemon/reload.ts; the thread stays between them.
const port = parentPort!
port.on('message', (req: WorkerRequest) => {
  try {
    const { reply, transfer } = prepare(req)
    port.postMessage(reply, transfer)
  } catch (e) {
    port.postMessage({ id: req.id, ok: false, fatal: (e as Error)?.stack ?? String(e) } satisfies WorkerReply)
  }
})
