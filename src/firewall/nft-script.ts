/**
 * Text of the `nft -f -` scripts the sink runs. Pure: no I/O, no clock; the sink owns
 * the process, the batching and the counters (STYLE.md: parser and socket owner apart).
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
 * Writes the elements so that each ends with exactly the given timeout, whether or not
 * it was already in the set: `add` (creates it if missing, so the `delete` cannot fail),
 * `delete`, `add` again. Through Linux 6.11 a plain `add element` of an existing element
 * leaves its old timeout (newer kernels update it); the three commands form one
 * transaction, so there is no instant at which the element is absent.
 */
export function batchScript(table: string, v4: SetBatch, v6: SetBatch, declare: boolean): string {
  let s = declare ? declareScript(table) : ''
  s += setCommands(table, 'allow4', v4)
  s += setCommands(table, 'allow6', v6)
  return s
}

function setCommands(table: string, set: string, b: SetBatch): string {
  const n = b.keys.length
  if (n === 0) return ''
  let added = ''
  let deleted = ''
  for (let i = 0; i < n; i++) {
    const sep = i === 0 ? '' : ', '
    added += sep + b.keys[i] + ' timeout ' + b.timeouts[i] + 's'
    deleted += sep + b.keys[i]
  }
  const head = ` element inet ${table} ${set} { `
  return 'add' + head + added + ' }\n' + 'delete' + head + deleted + ' }\n' + 'add' + head + added + ' }\n'
}
