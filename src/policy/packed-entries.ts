/**
 * Policy entry lists packed into typed arrays, so that a worker thread can hand a
 * million of them to the event loop by transferring three buffers instead of cloning a
 * million objects (structured clone rebuilds every object on the receiving side, which is
 * the event-loop time a reload in a worker is meant to save). The receiving side reads
 * them through `unpackEntries`, an array-like that builds a PolicyEntry only when one is
 * asked for (an explanation, a log line). Pure: no I/O.
 */
import { createHash } from 'node:crypto'
import type { Action, PolicyEntry, PortSpec } from './types.js'

export interface PackedEntries {
  readonly count: number
  /** Content key of the list (see entriesKey), computed where it was packed. */
  readonly key: string
  /** Per entry: 0 allow, 1 deny. */
  readonly actions: Uint8Array
  /** UTF-8 of every entry's `entry` then `source`, back to back. */
  readonly text: Uint8Array
  /** Per entry i: text[bounds[2i] .. bounds[2i+1]) is `entry`, .. bounds[2i+2]) is `source`. */
  readonly bounds: Int32Array
  /** Per entry: index into `portSets`. */
  readonly ports: Int32Array
  /** The distinct port lists (a handful per configuration). */
  readonly portSets: readonly (readonly PortSpec[])[]
}

/** Marks a packed list inside a structured-clone message. */
export const PACKED = '__egressdPackedEntries'

const keys = new WeakMap<readonly PolicyEntry[], string>()

/**
 * Content key of an entry list: lists with the same entries, ports and sources compile
 * to the same policy (GroupSet shares and reuses policies by it). A hash rather than the
 * JSON itself: the JSON of 1 M entries is ~100 MB, and unpacked lists already carry it.
 */
export function entriesKey(entries: readonly PolicyEntry[]): string {
  const known = keys.get(entries)
  if (known !== undefined) return known
  const key = createHash('sha256').update(JSON.stringify(entries)).digest('base64')
  keys.set(entries, key)
  return key
}

export function packEntries(entries: readonly PolicyEntry[]): { packed: PackedEntries; transfer: ArrayBuffer[] } {
  const count = entries.length
  const actions = new Uint8Array(count)
  const ports = new Int32Array(count)
  const bounds = new Int32Array(count * 2 + 1)
  const portSets: (readonly PortSpec[])[] = []
  const portIndex = new Map<string, number>()
  const parts: string[] = []
  let at = 0
  for (let i = 0; i < count; i++) {
    const e = entries[i]!
    actions[i] = e.action === 'deny' ? 1 : 0
    const pk = e.ports.map((p) => `${p.port}/${p.proto}`).join(',')
    let pi = portIndex.get(pk)
    if (pi === undefined) {
      pi = portSets.length
      portSets.push(e.ports.map((p) => ({ port: p.port, proto: p.proto })))
      portIndex.set(pk, pi)
    }
    ports[i] = pi
    bounds[2 * i] = at
    at += Buffer.byteLength(e.entry)
    bounds[2 * i + 1] = at
    at += Buffer.byteLength(e.source)
    parts.push(e.entry, e.source)
  }
  bounds[2 * count] = at
  const buf = Buffer.from(parts.join(''), 'utf8')
  const text = new Uint8Array(new ArrayBuffer(buf.length))
  text.set(buf)
  const packed: PackedEntries = { count, key: entriesKey(entries), actions, text, bounds, ports, portSets }
  return { packed, transfer: [actions.buffer as ArrayBuffer, text.buffer as ArrayBuffer, bounds.buffer as ArrayBuffer, ports.buffer as ArrayBuffer] }
}

/**
 * An array-like over a packed list: `length`, index reads (each PolicyEntry built once,
 * when first read), iteration. Its entriesKey is the packed key, so nothing stringifies
 * it on the event loop.
 */
export function unpackEntries(p: PackedEntries): readonly PolicyEntry[] {
  const made: (PolicyEntry | undefined)[] = []
  const text = Buffer.from(p.text.buffer, p.text.byteOffset, p.text.byteLength)
  const portSets = p.portSets.map((s) => Object.freeze(s.map((x) => Object.freeze({ ...x }))))
  const entryAt = (i: number): PolicyEntry => {
    let e = made[i]
    if (e === undefined) {
      e = Object.freeze({
        action: (p.actions[i] === 1 ? 'deny' : 'allow') as Action,
        entry: text.toString('utf8', p.bounds[2 * i]!, p.bounds[2 * i + 1]!),
        ports: portSets[p.ports[i]!]!,
        source: text.toString('utf8', p.bounds[2 * i + 1]!, p.bounds[2 * i + 2]!),
      })
      made[i] = e
    }
    return e
  }
  const list = new Proxy([] as PolicyEntry[], {
    get(target, prop, receiver) {
      if (typeof prop === 'string') {
        if (prop === 'length') return p.count
        const i = toIndex(prop)
        if (i >= 0) return i < p.count ? entryAt(i) : undefined
      }
      return Reflect.get(target, prop, receiver)
    },
    has(target, prop) {
      if (typeof prop === 'string') {
        const i = toIndex(prop)
        if (i >= 0) return i < p.count
      }
      return Reflect.has(target, prop)
    },
    ownKeys(target) {
      const out: string[] = []
      for (let i = 0; i < p.count; i++) out.push(String(i))
      return [...out, ...Reflect.ownKeys(target)]
    },
    getOwnPropertyDescriptor(target, prop) {
      if (typeof prop === 'string') {
        const i = toIndex(prop)
        if (i >= 0 && i < p.count) return { value: entryAt(i), writable: false, enumerable: true, configurable: true }
        if (prop === 'length') return { value: p.count, writable: true, enumerable: false, configurable: false }
      }
      return Reflect.getOwnPropertyDescriptor(target, prop)
    },
  })
  keys.set(list, p.key)
  return list
}

function toIndex(prop: string): number {
  const c = prop.charCodeAt(0)
  if (c < 48 || c > 57) return -1
  const n = Number(prop)
  return Number.isInteger(n) && String(n) === prop ? n : -1
}

export function isPacked(x: unknown): x is { [PACKED]: PackedEntries } {
  return typeof x === 'object' && x !== null && PACKED in x
}
