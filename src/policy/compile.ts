/**
 * Builds the compiled suffix trie (layout in trie.ts) from configuration entries, once
 * per configuration; the Policy in match.ts only reads it. Pure: no I/O.
 */
import { expandPattern, PatternError } from './pattern.js'
import { Policy } from './match.js'
import {
  F_ALLOWED_BELOW,
  F_INNER_CHILDREN,
  F_LEAF_CHILDREN,
  F_USED,
  hashLabelText,
  labelHashBytes,
  INLINE_BYTES,
  MAX_LOAD,
  N_EXACT,
  N_HASH,
  N_LABEL,
  N_LEN,
  N_PARENT,
  N_WILD,
  nodeHash,
  packWord,
  ROOT,
  STRIDE,
  type CompiledTrie,
} from './trie.js'
import type { PolicyEntry } from './types.js'

export { findWarnings, type PolicyWarning } from './warnings.js'

/** Throws PatternError with `entryIndex` set to the entry that failed. */
export function compilePolicy(entries: readonly PolicyEntry[]): Policy {
  return new Policy(compileTrie(entries), entries)
}

/** The trie's typed arrays alone (a reload's worker transfers them; src/daemon/reload.ts). */
export function compileTrie(entries: readonly PolicyEntry[]): CompiledTrie {
  const b = new TrieBuilder(entries.length)
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!
    let expanded
    try {
      expanded = expandPattern(e.entry)
    } catch (err) {
      if (err instanceof PatternError) throw new PatternError(err.message, err.offset, err.hint, i)
      throw err
    }
    for (const name of expanded.names) b.addRule(name, expanded.wildcard, e.action === 'deny', i)
  }
  return b.finish()
}

/**
 * Builds in insertion order (node ids 0, 1, 2 … with a parent always before its
 * children, and its own table of node ids), then `finish` lays the records out in their
 * hash slots, as trie.ts describes. Building straight into slots would renumber every
 * node, parent link and rule at each growth.
 */
class TrieBuilder {
  private nodes: Int32Array
  private nodeCount = 1 // the root, all zero but its parent
  private table: Int32Array
  private mask: number
  private labels: Uint8Array
  private labelBytes = 0
  private ruleEntry: Int32Array
  private ruleRef: Int32Array
  private ruleCount = 0

  /**
   * Sized from the entry count (most entries are one name, one new leaf): growing and
   * rehashing on the way to 1 M rules cost ~15 % of the compile time.
   */
  constructor(entries: number) {
    const rules = Math.max(1024, entries)
    this.nodes = new Int32Array(Math.ceil(rules * 1.25) * B_STRIDE)
    this.nodes[B_PARENT] = -1
    let slots = 2048
    while (slots * MAX_LOAD < rules * 1.25) slots *= 2
    this.table = new Int32Array(slots)
    this.mask = slots - 1
    this.labels = new Uint8Array(rules * 12)
    this.ruleEntry = new Int32Array(rules)
    this.ruleRef = new Int32Array(rules)
  }

  addRule(name: string, wildcard: boolean, deny: boolean, entryIndex: number): void {
    const node = this.insert(name)
    const id = this.ruleCount++
    if (id === this.ruleEntry.length) {
      this.ruleEntry = grow(this.ruleEntry, id * 2)
      this.ruleRef = grow(this.ruleRef, id * 2)
    }
    this.ruleEntry[id] = entryIndex
    this.ruleRef[id] = (node << 1) | (wildcard ? 1 : 0)
    const at = node * B_STRIDE + (wildcard ? B_WILD : B_EXACT)
    const cur = this.nodes[at]!
    // The first rule for a name decides among equals; a deny replaces an allow because deny wins.
    if (cur === 0 || (deny && cur > 0)) this.nodes[at] = deny ? -(id + 1) : id + 1
    if (!deny) this.markAllowedBelow(wildcard ? node : this.nodes[node * B_STRIDE + B_PARENT]!)
  }

  /** Lays every node out in its slot (parents first, so their slots are known) and renumbers the rules. */
  finish(): CompiledTrie {
    const count = this.nodeCount
    const src = this.nodes
    // A node is inner when some node names it as parent; the root always is.
    const inner = new Uint8Array(count)
    inner[0] = 1
    let innerCount = 1
    for (let n = 1; n < count; n++) {
      const p = src[n * B_STRIDE + B_PARENT]!
      if (inner[p] === 0) {
        inner[p] = 1
        innerCount++
      }
    }
    const innerSize = Math.max(16, Math.ceil(innerCount / MAX_LOAD))
    const leafSize = Math.max(16, Math.ceil((count - innerCount) / MAX_LOAD))
    const out = new Int32Array((innerSize + leafSize) * STRIDE)
    let long = 0
    for (let n = 1; n < count; n++) {
      const len = src[n * B_STRIDE + B_LEN]! & 0xff
      if (len > INLINE_BYTES) long += (len + 3) >> 2
    }
    const labelWords = new Int32Array(long)
    let wordsUsed = 0
    const slotOf = new Int32Array(count)
    out[ROOT * STRIDE + N_PARENT] = -1
    out[ROOT * STRIDE + N_LEN] = F_USED | (src[B_LEN]! & F_ALLOWED_BELOW)
    slotOf[0] = ROOT
    const bytes = this.labels
    for (let n = 1; n < count; n++) {
      const s = n * B_STRIDE
      const parent = slotOf[src[s + B_PARENT]!]!
      const lenFlags = src[s + B_LEN]!
      const len = lenFlags & 0xff
      const labelAt = src[s + B_LABEL]!
      const h = nodeHash(parent, labelHashBytes(bytes, labelAt, len))
      const isInner = inner[n] === 1
      const base = isInner ? 0 : innerSize
      const size = isInner ? innerSize : leafSize
      let slot = base + (((h >>> 0) * (size / 4294967296)) >>> 0)
      while (out[slot * STRIDE + N_LEN] !== 0) if (++slot === base + size) slot = base
      const b = slot * STRIDE
      out[b + N_HASH] = h
      out[b + N_PARENT] = parent
      out[b + N_LEN] = out[b + N_LEN]! | lenFlags | F_USED
      out[b + N_EXACT] = src[s + B_EXACT]!
      out[b + N_WILD] = src[s + B_WILD]!
      let dst: Int32Array = out
      let at = b + N_LABEL
      if (len > INLINE_BYTES) {
        out[b + N_LABEL] = wordsUsed
        dst = labelWords
        at = wordsUsed
        wordsUsed += (len + 3) >> 2
      }
      for (let q = 0; q < len; q += 4) dst[at + (q >> 2)] = packWord(bytes, labelAt + q, Math.min(4, len - q))
      const pb = parent * STRIDE + N_LEN
      out[pb] = out[pb]! | (isInner ? F_INNER_CHILDREN : F_LEAF_CHILDREN)
      slotOf[n] = slot
    }
    const ruleRef = this.ruleRef.slice(0, this.ruleCount)
    for (let id = 0; id < ruleRef.length; id++) ruleRef[id] = (slotOf[ruleRef[id]! >> 1]! << 1) | (ruleRef[id]! & 1)
    return { nodes: out, innerSize, leafSize, labelWords, ruleEntry: this.ruleEntry.slice(0, this.ruleCount), ruleRef }
  }

  /** Marks `node` and its ancestors; stops at the first already marked, whose ancestors are. */
  private markAllowedBelow(node: number): void {
    const nodes = this.nodes
    while (node >= 0) {
      const at = node * B_STRIDE + B_LEN
      if ((nodes[at]! & F_ALLOWED_BELOW) !== 0) return
      nodes[at] = nodes[at]! | F_ALLOWED_BELOW
      node = nodes[node * B_STRIDE + B_PARENT]!
    }
  }

  /** The node for a normalized name (lowercase ASCII, valid), created as needed. */
  private insert(name: string): number {
    let node = 0
    let end = name.length
    for (;;) {
      const dot = name.lastIndexOf('.', end - 1)
      node = this.child(node, name, dot + 1, end)
      if (dot < 0) return node
      end = dot
    }
  }

  private child(parent: number, name: string, start: number, end: number): number {
    const h = hashLabelText(parent, name, start, end)
    const len = end - start
    let slot = h & this.mask
    for (;;) {
      const n = this.table[slot]!
      if (n === 0) break
      const b = n * B_STRIDE
      if (
        this.nodes[b + B_HASH] === h &&
        this.nodes[b + B_PARENT] === parent &&
        (this.nodes[b + B_LEN]! & 0xff) === len &&
        this.sameLabel(this.nodes[b + B_LABEL]!, name, start, len)
      ) {
        return n
      }
      slot = (slot + 1) & this.mask
    }
    const n = this.nodeCount++
    if ((n + 1) * B_STRIDE > this.nodes.length) this.nodes = grow(this.nodes, this.nodes.length * 2)
    if (this.labelBytes + len > this.labels.length) {
      this.labels = grow(this.labels, Math.max(this.labels.length * 2, this.labelBytes + len))
    }
    const labelAt = this.labelBytes
    for (let i = 0; i < len; i++) this.labels[labelAt + i] = name.charCodeAt(start + i)
    this.labelBytes += len
    const b = n * B_STRIDE
    this.nodes[b + B_HASH] = h
    this.nodes[b + B_PARENT] = parent
    this.nodes[b + B_LABEL] = labelAt
    this.nodes[b + B_LEN] = len
    this.table[slot] = n
    if (n + 1 > this.table.length * MAX_LOAD) this.rehash()
    return n
  }

  private sameLabel(at: number, name: string, start: number, len: number): boolean {
    for (let i = 0; i < len; i++) if (this.labels[at + i] !== name.charCodeAt(start + i)) return false
    return true
  }

  private rehash(): void {
    const size = this.table.length * 2
    const table = new Int32Array(size)
    const mask = size - 1
    for (let n = 1; n < this.nodeCount; n++) {
      let slot = this.nodes[n * B_STRIDE + B_HASH]! & mask
      while (table[slot] !== 0) slot = (slot + 1) & mask
      table[slot] = n
    }
    this.table = table
    this.mask = mask
  }
}

// The builder's own records: insertion order, hash of (builder id, label).
const B_STRIDE = 6
const B_HASH = 0
const B_PARENT = 1
const B_LABEL = 2
const B_LEN = 3
const B_EXACT = 4
const B_WILD = 5

function grow<T extends Int32Array | Uint8Array>(a: T, size: number): T {
  const b = new (a.constructor as new (n: number) => T)(size)
  b.set(a)
  return b
}
