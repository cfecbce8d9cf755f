/**
 * `firewall.nftables.device_key: mac`: the link-layer address of the device that asked,
 * from the kernel's neighbour table, looked up by the address its DNS query came from.
 *
 * The device just sent a query, and before that it resolved the gateway's address
 * (ARP, or a neighbour solicitation carrying its own link-layer address), which makes
 * the gateway's kernel store an entry for it: normally REACHABLE, STALE or DELAY. No
 * entry means the client is not on a link of the gateway (it is behind a router), or
 * the kernel dropped its entry since: the caller counts it and writes nothing.
 *
 * Sources, measured on the development machine (2 cores, shared; Node 20):
 * - IPv4: /proc/net/arp, read whole: 0.11 ms p50, 1.5 ms p99;
 * - IPv6: there is no /proc file, so `ip -j -6 neigh show`, whole table: a process,
 *   5.5 ms p50, 46 ms p99 on the loaded machine, 1.3 ms of this process's CPU. Per
 *   address (`ip -6 neigh show ADDR`) costs the same, so one run serves every device.
 *
 * Hence a table read serves every client, and is cached: a snapshot per family,
 * address → MAC (bounded by MAX_NEIGHBOURS), trusted for `ttlMs` (10 s) and refreshed in
 * the background from its second half, so devices that keep asking are answered
 * synchronously. A miss re-reads the table, at most once per `minReadIntervalMs`
 * (250 ms) per family whatever the number of clients; a miss that the read confirms is
 * remembered for `negativeTtlMs` (1 s, at most MAX_NEGATIVES addresses), so a client
 * behind a router makes one answer in a second wait for a read, not every answer.
 */
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { ipFamily, peerAddress } from '../net/address.js'

/** Entries kept from one table read; the kernel's own bound (gc_thresh3) is 1 024 by default. */
export const MAX_NEIGHBOURS = 65_536
/** Addresses remembered as having no entry. */
export const MAX_NEGATIVES = 4_096
/** `ip -j -6 neigh show` output cap: ~130 bytes an entry × MAX_NEIGHBOURS. */
const IP_MAX_BUFFER = 16 * 1024 * 1024

const MAC = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/

/**
 * `aa:bb:cc:dd:ee:ff` in lower case, or null for anything else, the all-zero address
 * (an incomplete ARP entry) and group addresses (low bit of the first octet): no
 * device sends from one. The result is pasted into nft scripts: only this form gets there.
 */
export function normalizeMac(text: string): string | null {
  const mac = text.toLowerCase()
  if (!MAC.test(mac) || mac === '00:00:00:00:00:00') return null
  if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) return null
  return mac
}

/**
 * The table's key for a client address: IPv4-mapped IPv6 (what a dual-stack socket
 * reports for an IPv4 peer) is the IPv4 address, found in the ARP table.
 */
export function neighbourKey(address: string): { family: 4 | 6; key: string } | null {
  if (address.includes('%')) return null
  const peer = peerAddress(address)
  return peer === null ? null : { family: peer.family, key: peer.text }
}

/**
 * Adds `address → mac` unless the address was seen already with another MAC (on two
 * interfaces, or a table in flux): then it maps to '' and `finish` drops it, because
 * either answer could open a destination for the wrong device.
 */
function put(out: Map<string, string>, address: string, mac: string): void {
  const had = out.get(address)
  if (had === undefined) out.set(address, mac)
  else if (had !== mac) out.set(address, '')
}

function finish(out: Map<string, string>): Map<string, string> {
  for (const [a, m] of out) if (m === '') out.delete(a)
  return out
}

/**
 * /proc/net/arp: `IP address  HW type  Flags  HW address  Mask  Device`. Complete
 * entries only (flag ATF_COM 0x2; the kernel lists every state with a link-layer
 * address as complete, and INCOMPLETE/FAILED as 0x0 with 00:00:00:00:00:00).
 */
export function parseProcNetArp(text: string, max = MAX_NEIGHBOURS): Map<string, string> {
  const out = new Map<string, string>()
  const lines = text.split('\n')
  for (let i = 1; i < lines.length && out.size < max; i++) {
    const f = lines[i]!.trim().split(/\s+/)
    if (f.length < 4 || ipFamily(f[0]!) !== 4) continue
    const flags = Number.parseInt(f[2]!, 16)
    if (!Number.isFinite(flags) || (flags & 0x2) === 0) continue
    const mac = normalizeMac(f[3]!)
    if (mac !== null) put(out, f[0]!, mac)
  }
  return finish(out)
}

/**
 * `ip -j -6 neigh show`: `[{"dst", "dev", "lladdr", "state": [...]}]`. Entries without
 * a link-layer address, INCOMPLETE and FAILED ones are skipped; anything unreadable
 * gives an empty table (every client is then a miss, counted).
 */
export function parseIpNeighJson(json: string, max = MAX_NEIGHBOURS): Map<string, string> {
  const out = new Map<string, string>()
  let doc: unknown
  try {
    doc = JSON.parse(json)
  } catch {
    return out
  }
  if (!Array.isArray(doc)) return out
  for (const e of doc as unknown[]) {
    if (out.size >= max) break
    if (typeof e !== 'object' || e === null) continue
    const { dst, lladdr, state } = e as { dst?: unknown; lladdr?: unknown; state?: unknown }
    // Keyed by the canonical text, the form neighbourKey gives a client's address.
    const peer = typeof dst === 'string' ? peerAddress(dst) : null
    if (peer === null || peer.family !== 6 || typeof lladdr !== 'string') continue
    if (Array.isArray(state) && state.some((s) => s === 'FAILED' || s === 'INCOMPLETE')) continue
    const mac = normalizeMac(lladdr)
    if (mac !== null) put(out, peer.text, mac)
  }
  return finish(out)
}

/** Where the kernel's tables are read: the text of one family's whole table. */
export interface NeighbourSource {
  read(family: 4 | 6): Promise<string>
}

export interface KernelNeighboursOptions {
  /** Default /proc/net/arp; tests read a namespace's table as /proc/PID/net/arp. */
  readonly arpPath?: string
  /** Default ['ip']; tests use ['ip', '-n', NS]. */
  readonly ip?: readonly string[]
}

/** The running kernel's tables, in this process's network namespace. */
export class KernelNeighbours implements NeighbourSource {
  private readonly arpPath: string
  private readonly ip: readonly string[]

  constructor(opts: KernelNeighboursOptions = {}) {
    this.arpPath = opts.arpPath ?? '/proc/net/arp'
    this.ip = opts.ip ?? ['ip']
  }

  read(family: 4 | 6): Promise<string> {
    if (family === 4) return readFile(this.arpPath, 'utf8')
    return new Promise((resolve, reject) => {
      execFile(this.ip[0]!, [...this.ip.slice(1), '-j', '-6', 'neigh', 'show'], { maxBuffer: IP_MAX_BUFFER, timeout: 5_000 }, (err, stdout) => {
        if (err) reject(err)
        else resolve(stdout)
      })
    })
  }
}

export interface NeighbourTableOptions {
  /** How long a table read is trusted for addresses it holds (default 10 s). */
  readonly ttlMs?: number
  /** Reads of one family at most this often (default 250 ms). */
  readonly minReadIntervalMs?: number
  /** How long an address a read did not hold stays a miss without a new read (default 1 s). */
  readonly negativeTtlMs?: number
  /** Called after each read: for the metrics. */
  readonly onRead?: (family: 4 | 6, ok: boolean, err?: unknown) => void
}

interface Snapshot {
  map: Map<string, string>
  /** When the read that made it ended; -Infinity before the first. */
  at: number
  /** When the last read started. */
  startedAt: number
  inflight: Promise<Map<string, string>> | null
}

/** Client address → MAC, cached as the file header says. */
export class NeighbourTable {
  private readonly ttl: number
  private readonly minInterval: number
  private readonly negativeTtl: number
  private readonly onRead: NeighbourTableOptions['onRead']
  private readonly snaps: Record<4 | 6, Snapshot>
  /** Address → until when it is a known miss; insertion order is age. */
  private readonly negatives = new Map<string, number>()

  constructor(
    private readonly source: NeighbourSource,
    private readonly now: () => number = Date.now,
    opts: NeighbourTableOptions = {},
  ) {
    this.ttl = opts.ttlMs ?? 10_000
    this.minInterval = opts.minReadIntervalMs ?? 250
    this.negativeTtl = opts.negativeTtlMs ?? 1_000
    this.onRead = opts.onRead
    const snap = (): Snapshot => ({ map: new Map(), at: -Infinity, startedAt: -Infinity, inflight: null })
    this.snaps = { 4: snap(), 6: snap() }
  }

  /**
   * Without waiting: the MAC, null when the client is known to have none (not an IP
   * literal, or a recent read did not hold it), or undefined when only a read can tell
   * (call `lookup`).
   */
  cached(address: string): string | null | undefined {
    const k = neighbourKey(address)
    if (k === null) return null
    const now = this.now()
    const s = this.snaps[k.family]
    const age = now - s.at
    if (age < this.ttl) {
      const mac = s.map.get(k.key)
      if (mac !== undefined) {
        if (age >= this.ttl / 2 && s.inflight === null) void this.read(k.family)
        return mac
      }
    }
    const until = this.negatives.get(k.key)
    if (until !== undefined) {
      if (until > now) return null
      this.negatives.delete(k.key)
    }
    return undefined
  }

  /** The MAC of `address`, reading the table if the cache cannot tell; never rejects. */
  async lookup(address: string): Promise<string | null> {
    const c = this.cached(address)
    if (c !== undefined) return c
    const k = neighbourKey(address)!
    const map = await this.read(k.family)
    const mac = map.get(k.key)
    if (mac !== undefined) return mac
    if (this.negatives.size >= MAX_NEGATIVES) this.negatives.delete(this.negatives.keys().next().value!)
    this.negatives.set(k.key, this.now() + this.negativeTtl)
    return null
  }

  /** Reads one family's table: one read at a time, at most one per minInterval. */
  private read(family: 4 | 6): Promise<Map<string, string>> {
    const s = this.snaps[family]
    if (s.inflight !== null) return s.inflight
    const wait = s.startedAt + this.minInterval - this.now()
    const p = (wait > 0 ? new Promise<void>((r) => setTimeout(r, wait)) : Promise.resolve())
      .then(() => {
        s.startedAt = this.now()
        return this.source.read(family)
      })
      .then(
        (text) => {
          s.map = family === 4 ? parseProcNetArp(text) : parseIpNeighJson(text)
          s.at = this.now()
          this.onRead?.(family, true)
          return s.map
        },
        (err: unknown) => {
          // The last good snapshot stays for what is left of its life.
          this.onRead?.(family, false, err)
          return new Map<string, string>()
        },
      )
      .finally(() => {
        s.inflight = null
      })
    s.inflight = p
    return p
  }
}
