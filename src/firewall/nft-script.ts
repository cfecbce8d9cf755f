/**
 * Text of the `nft -f -` scripts the sink runs. Pure: no I/O, no clock; the sink owns
 * the process, the batching and the counters.
 */

/** Element timeouts are whole seconds in [MIN, MAX]. */
export const MIN_TIMEOUT_SECONDS = 1
/**
 * A week. `timeout 0s` would make an element that never expires, and kernels refuse
 * large values ("value too large" at 2^31 s here); a DNS cache caps TTLs far lower.
 */
export const MAX_TIMEOUT_SECONDS = 604_800

/** nft identifiers as config/load.ts accepts them; the name is pasted into scripts. */
const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,31}$/

export function isValidTableName(table: string): boolean {
  return TABLE_NAME.test(table)
}

/**
 * The set definitions. MUST stay identical to config/nftables/egressd.nft: nft refuses
 * `add set` for an existing set with other flags or type ("File exists"), and silently
 * applies a differing `size` to the live set (test/firewall/template.test.ts compares).
 */
export const SET_TYPES = {
  allow4: 'ipv4_addr . inet_proto . inet_service',
  allow6: 'ipv6_addr . inet_proto . inet_service',
} as const

/**
 * Creates the table and both sets when missing; a no-op that keeps every element when
 * they exist (`add`, unlike `create`, does not fail on an existing object). Touches no
 * chain and no other table.
 */
export function declareScript(table: string): string {
  return (
    `add table inet ${table}\n` +
    `add set inet ${table} allow4 { type ${SET_TYPES.allow4}; flags timeout; }\n` +
    `add set inet ${table} allow6 { type ${SET_TYPES.allow6}; flags timeout; }\n`
  )
}

export function clampTimeout(seconds: number): number {
  if (!(seconds >= MIN_TIMEOUT_SECONDS)) return MIN_TIMEOUT_SECONDS
  if (seconds > MAX_TIMEOUT_SECONDS) return MAX_TIMEOUT_SECONDS
  return Math.floor(seconds)
}

/** `192.0.2.1 . udp . 123`: the element key, also the sink's dedupe key. */
export function elementKey(address: string, proto: string, port: number): string {
  return address + ' . ' + proto + ' . ' + port
}

/**
 * One set's share of a batch. `keys[i]` holds no duplicates (a duplicate in `delete
 * element` fails the whole transaction with ENOENT); `timeouts[i]` is in seconds.
 */
export interface SetBatch {
  readonly keys: string[]
  readonly timeouts: number[]
}

/**
 * How an element that may already be in the set gets exactly its new timeout:
 * - `add-delete-add`: `add` (creates it if missing, so the `delete` cannot fail),
 *   `delete`, `add` again, in one transaction, so there is no instant at which the
 *   element is absent. Needed through Linux 6.11, where a plain `add element` of an
 *   existing element leaves its old timeout.
 * - `add`: newer kernels update the timeout on a plain `add`. A 10 000-element batch
 *   took 0.08 s instead of 0.27 s (bench/RESULTS.md, firewall section). The sink uses it
 *   only after a probe of the running kernel (refreshProbe*) showed it.
 */
export type RefreshMode = 'add' | 'add-delete-add'

export function batchScript(table: string, v4: SetBatch, v6: SetBatch, declare: boolean, mode: RefreshMode = 'add-delete-add'): string {
  let s = declare ? declareScript(table) : ''
  s += setCommands(table, 'allow4', v4, mode)
  s += setCommands(table, 'allow6', v6, mode)
  return s
}

/**
 * The start-up probe, in a table of its own that nothing else uses: an element with a
 * 10 s timeout, then (a separate nft run, as a later batch would be) the same element
 * with 3 600 s. refreshProbeResult reads the listing. The table is deleted afterwards.
 */
export const PROBE_KEY = '192.0.2.1 . tcp . 9'
export const PROBE_FIRST_TIMEOUT = 10
export const PROBE_SECOND_TIMEOUT = 3600

export function refreshProbeScripts(probeTable: string): { create: string; readd: string; list: string[]; remove: string } {
  const set = `inet ${probeTable} s`
  return {
    // add + delete first: a table left by a killed process with the same pid must not
    // hand this probe an element that already had the long timeout.
    create:
      `add table inet ${probeTable}\n` +
      `delete table inet ${probeTable}\n` +
      `add table inet ${probeTable}\n` +
      `add set ${set} { type ${SET_TYPES.allow4}; flags timeout; }\n` +
      `add element ${set} { ${PROBE_KEY} timeout ${PROBE_FIRST_TIMEOUT}s }\n`,
    readd: `add element ${set} { ${PROBE_KEY} timeout ${PROBE_SECOND_TIMEOUT}s }\n`,
    list: ['-j', 'list', 'set', 'inet', probeTable, 's'],
    remove: `delete table inet ${probeTable}\n`,
  }
}

/**
 * `add` when `nft -j list set` shows the probe element expiring later than its first
 * timeout allowed; `add-delete-add` for anything else, an unreadable listing included.
 */
export function refreshProbeResult(json: string): RefreshMode {
  try {
    const doc = JSON.parse(json) as { nftables?: Array<{ set?: { elem?: Array<{ elem?: { expires?: unknown } }> } }> }
    for (const item of doc.nftables ?? []) {
      for (const e of item.set?.elem ?? []) {
        const expires = e.elem?.expires
        if (typeof expires === 'number' && expires > PROBE_FIRST_TIMEOUT) return 'add'
      }
    }
  } catch {
    // Fall through: the safe way.
  }
  return 'add-delete-add'
}

function setCommands(table: string, set: string, b: SetBatch, mode: RefreshMode): string {
  const n = b.keys.length
  if (n === 0) return ''
  let added = ''
  for (let i = 0; i < n; i++) added += (i === 0 ? '' : ', ') + b.keys[i] + ' timeout ' + b.timeouts[i] + 's'
  const head = ` element inet ${table} ${set} { `
  if (mode === 'add') return 'add' + head + added + ' }\n'
  return 'add' + head + added + ' }\n' + 'delete' + head + b.keys.join(', ') + ' }\n' + 'add' + head + added + ' }\n'
}
