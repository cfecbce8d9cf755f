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
 * Which devices an element opens a destination for:
 * - `shared`: `address . protocol . port` in allow4/allow6, for every device;
 * - `device`: `client . address . protocol . port` in allow4_dev/allow6_dev, for the
 *   device that asked only. Client and destination are of one family because a packet
 *   is: nft refuses `ip saddr . ip6 daddr` in one rule ("conflicting protocols
 *   specified: ip vs. ip6", nft 1.0.6), so a set keyed by an IPv4 client and an IPv6
 *   destination could hold elements no packet ever matches.
 */
export type Scope = 'shared' | 'device'

/**
 * Scope device's identity of a device (`firewall.nftables.device_key`):
 * - `address`: the address it asked from; works across a router, but an element is of
 *   one family (see Scope);
 * - `mac`: its link-layer address, from the kernel's neighbour table (neighbours.ts);
 *   needs the device on-link with the gateway, and works across families and IPv6
 *   privacy addresses: `ether saddr . ip6 daddr` is one protocol stack, so nft accepts
 *   it where `ip saddr . ip6 daddr` is refused.
 */
export type DeviceKey = 'address' | 'mac'

/** Which pair of sets the sink writes: one per scope, and per device key in scope device. */
export type SetGroup = 'shared' | 'device' | 'mac'

export function setGroup(scope: Scope, deviceKey: DeviceKey = 'address'): SetGroup {
  return scope === 'shared' ? 'shared' : deviceKey === 'mac' ? 'mac' : 'device'
}

/**
 * The set definitions. MUST stay identical to config/nftables/egressd.nft: nft refuses
 * `add set` for an existing set with other flags or type ("File exists"), and silently
 * applies a differing `size` to the live set (test/firewall/template.test.ts compares).
 */
export const SET_TYPES = {
  allow4: 'ipv4_addr . inet_proto . inet_service',
  allow6: 'ipv6_addr . inet_proto . inet_service',
  allow4_dev: 'ipv4_addr . ipv4_addr . inet_proto . inet_service',
  allow6_dev: 'ipv6_addr . ipv6_addr . inet_proto . inet_service',
  allow4_mac: 'ether_addr . ipv4_addr . inet_proto . inet_service',
  allow6_mac: 'ether_addr . ipv6_addr . inet_proto . inet_service',
} as const

export type SetName = keyof typeof SET_TYPES

/** The IPv4 and the IPv6 set of each group (by destination family). */
export const SCOPE_SETS: Record<SetGroup, readonly [SetName, SetName]> = {
  shared: ['allow4', 'allow6'],
  device: ['allow4_dev', 'allow6_dev'],
  mac: ['allow4_mac', 'allow6_mac'],
}

const GROUPS: readonly SetGroup[] = ['shared', 'device', 'mac']

function declareSet(table: string, set: SetName): string {
  return `add set inet ${table} ${set} { type ${SET_TYPES[set]}; flags timeout; }\n`
}

/**
 * Creates the table and the scope's two sets when missing; a no-op that keeps every
 * element when they exist (`add`, unlike `create`, does not fail on an existing
 * object). Touches no chain, no other table and no set of the other scope.
 */
export function declareScript(table: string, scope: SetGroup = 'shared'): string {
  const [v4, v6] = SCOPE_SETS[scope]
  return `add table inet ${table}\n` + declareSet(table, v4) + declareSet(table, v6)
}

/**
 * Removing the other groups' sets after a switch of scope or device key: `empty` (one
 * run) makes sure they exist (with their exact definition) and flushes them, so no
 * element of the old group opens anything any more; each `remove` (one run per group)
 * deletes one group's pair, which nft refuses (EBUSY) while a rule still names them,
 * as the shipped ruleset's unused scope chains do. Then the emptied sets stay, and
 * nothing ever writes to them again.
 */
export function retireScripts(table: string, current: SetGroup): { empty: string; remove: string[] } {
  let empty = `add table inet ${table}\n`
  const remove: string[] = []
  for (const group of GROUPS) {
    if (group === current) continue
    let r = ''
    for (const set of SCOPE_SETS[group]) {
      empty += declareSet(table, set) + `flush set inet ${table} ${set}\n`
      r += `delete set inet ${table} ${set}\n`
    }
    remove.push(r)
  }
  return { empty, remove }
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
 * `192.168.1.20 . 192.0.2.1 . udp . 123`: the element key of scope device; with
 * device_key mac the device is its MAC, `02:00:5e:10:00:01 . 2001:db8::1 . udp . 123`.
 */
export function deviceElementKey(client: string, address: string, proto: string, port: number): string {
  return client + ' . ' + address + ' . ' + proto + ' . ' + port
}

/**
 * One set's share of a batch. `keys[i]` holds no duplicates (a duplicate in `delete
 * element` fails the whole transaction with ENOENT); `timeouts[i]` is in seconds, and 0
 * marks an element dropped from the batch after it was queued (evicted before it was
 * written). `evict`: keys to delete, none of them among the live `keys`.
 */
export interface SetBatch {
  readonly keys: string[]
  readonly timeouts: number[]
  readonly evict?: string[]
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

export function batchScript(table: string, v4: SetBatch, v6: SetBatch, declare: boolean, mode: RefreshMode = 'add-delete-add', scope: SetGroup = 'shared'): string {
  const [set4, set6] = SCOPE_SETS[scope]
  let s = declare ? declareScript(table, scope) : ''
  s += setCommands(table, set4, v4, mode)
  s += setCommands(table, set6, v6, mode)
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
  const evict = b.evict ?? []
  let added = ''
  let addedKeys = ''
  for (let i = 0; i < n; i++) {
    if (b.timeouts[i] === 0) continue
    added += (added === '' ? '' : ', ') + b.keys[i] + ' timeout ' + b.timeouts[i] + 's'
    addedKeys += (addedKeys === '' ? '' : ', ') + b.keys[i]
  }
  if (added === '' && evict.length === 0) return ''
  const head = ` element inet ${table} ${set} { `
  // An evicted element may have expired in the kernel already, and `delete element` of
  // a missing one fails the whole transaction (nft 1.0.6 has no `destroy`): adding it
  // first, with 1 s, makes the delete always find it.
  let first = added
  for (const k of evict) first += (first === '' ? '' : ', ') + k + ' timeout 1s'
  let deleted = mode === 'add' ? '' : addedKeys
  for (const k of evict) deleted += (deleted === '' ? '' : ', ') + k
  let s = 'add' + head + first + ' }\n'
  if (deleted !== '') s += 'delete' + head + deleted + ' }\n'
  if (mode !== 'add' && added !== '') s += 'add' + head + added + ' }\n'
  return s
}

/** One element of an `nft -j list set` listing: its key parts and seconds left. */
export interface ListedElement {
  readonly parts: ReadonlyArray<string | number>
  readonly expires: number
}

/**
 * The elements of `nft -j list set` (the sink reads its own sets back at start). An
 * element without `expires` (no timeout) reads as 0 s left; anything unreadable is
 * skipped.
 */
export function parseSetListing(json: string): ListedElement[] {
  const out: ListedElement[] = []
  let doc: { nftables?: Array<{ set?: { elem?: unknown[] } }> }
  try {
    doc = JSON.parse(json) as typeof doc
  } catch {
    return out
  }
  for (const item of doc.nftables ?? []) {
    for (const e of item.set?.elem ?? []) {
      const elem = (e as { elem?: { val?: { concat?: unknown }; expires?: unknown } } | null)?.elem
      const parts = elem?.val?.concat
      if (!Array.isArray(parts) || !parts.every((p) => typeof p === 'string' || typeof p === 'number')) continue
      out.push({ parts: parts as Array<string | number>, expires: typeof elem!.expires === 'number' ? elem!.expires : 0 })
    }
  }
  return out
}
