/**
 * Lookups in the compiled suffix trie (layout in trie.ts, built by compile.ts). Reads
 * the typed arrays only: no split, no Buffer decoding, no allocation per lookup. Names
 * are walked from the last label to the first, case-folded byte by byte.
 *
 * Deciding rule: the most specific matching deny if any (deny beats allow whatever the
 * specificity), else the most specific matching allow, else none. Walking from the TLD
 * down, a deeper wildcard simply overwrites a shallower one and the exact rule of the
 * whole name overwrites both.
 */
import {
  F_ALLOWED_BELOW,
  F_INNER_CHILDREN,
  F_LEAF_CHILDREN,
  FOLD,
  HASH_GOLDEN,
  HASH_MIX,
  HASH_PRIME,
  HASH_SEED,
  INLINE_BYTES,
  LEN_MASK,
  N_EXACT,
  N_HASH,
  N_LABEL,
  N_LEN,
  N_PARENT,
  N_WILD,
  ROOT,
  STRIDE,
  type CompiledTrie,
} from './trie.js'
import type { Action, PolicyEntry, PortSpec, Rule } from './types.js'

const DOT = 0x2e
const MAX_LABEL = 63
const MAX_NAME = 253
/** Wire form: length bytes + labels + the root byte. */
const MAX_WIRE = 255

export class Policy {
  /** Every expanded rule; `rules[i].id === i`. */
  readonly rules: readonly Rule[]
  /** Number of expanded rules (the egressd_policy_rules gauge). */
  readonly size: number

  private readonly nodes: Int32Array
  /** The same memory as `nodes`, for the inline label bytes. */
  private readonly nodeBytes: Uint8Array
  /** Region sizes in records; a hash h goes to slot base + ⌊h × size / 2³²⌋ of its region. */
  private readonly innerSize: number
  private readonly innerScale: number
  private readonly leafSize: number
  private readonly leafScale: number
  private readonly labels: Uint8Array
  private readonly ruleRef: Int32Array
  /** Label start offsets of the wire name being matched; 127 labels fit in 255 bytes. */
  private readonly wireLabels = new Int32Array(128)

  /** Built by compilePolicy; not meant to be called elsewhere. */
  constructor(trie: CompiledTrie, entries: readonly PolicyEntry[]) {
    this.nodes = trie.nodes
    this.nodeBytes = new Uint8Array(trie.nodes.buffer, trie.nodes.byteOffset, trie.nodes.byteLength)
    this.innerSize = trie.innerSize
    this.innerScale = trie.innerSize / 4294967296
    this.leafSize = trie.leafSize
    this.leafScale = trie.leafSize / 4294967296
    this.labels = trie.labels
    this.ruleRef = trie.ruleRef
    const rules: Rule[] = []
    for (let id = 0; id < trie.ruleEntry.length; id++) rules.push(new CompiledRule(id, entries[trie.ruleEntry[id]!]!, this))
    this.rules = rules
    this.size = rules.length
  }

  /** The deciding rule for a name as text (one trailing dot ignored), or null. */
  match(name: string): Rule | null {
    let end = name.length
    if (end !== 0 && name.charCodeAt(end - 1) === DOT) end--
    if (end === 0 || end > MAX_NAME) return null
    const nodes = this.nodes
    let node = ROOT
    let allow = 0
    let deny = 0
    let i = end // exclusive end of the current label
    for (;;) {
      let h = Math.imul(node ^ HASH_SEED, HASH_GOLDEN)
      let j = i - 1
      for (; j >= 0; j--) {
        const c = name.charCodeAt(j)
        if (c === DOT) break
        const f = c < 0x80 ? FOLD[c]! : 0
        if (f === 0) return null
        h = Math.imul(h ^ f, HASH_PRIME)
      }
      const len = i - 1 - j
      if (len === 0 || len > MAX_LABEL) return null
      // A label remains below `node`, so its wildcard applies whatever comes next.
      const w = nodes[node * STRIDE + N_WILD]!
      if (w > 0) allow = w
      else if (w < 0) deny = -w
      h ^= h >>> 16
      h = Math.imul(h, HASH_MIX)
      h ^= h >>> 13
      const child = this.findText(h, node, name, j + 1, len)
      if (child < 0) {
        if (j >= 0 && !validTextLabels(name, j)) return null
        break
      }
      node = child
      if (j < 0) {
        const e = nodes[node * STRIDE + N_EXACT]!
        if (e > 0) allow = e
        else if (e < 0) deny = -e
        break
      }
      i = j
    }
    return deny !== 0 ? this.rules[deny - 1]! : allow !== 0 ? this.rules[allow - 1]! : null
  }

  /**
   * The deciding rule for a name in DNS wire format at `offset` (length-prefixed labels,
   * ending with a 0 byte). A compression pointer or any malformation gives null.
   */
  matchWire(buf: Uint8Array, offset: number): Rule | null {
    const n = this.scanWire(buf, offset)
    if (n <= 0) return null
    const nodes = this.nodes
    const offs = this.wireLabels
    let node = ROOT
    let allow = 0
    let deny = 0
    for (let k = n - 1; k >= 0; k--) {
      const start = offs[k]!
      const len = buf[start - 1]!
      let h = Math.imul(node ^ HASH_SEED, HASH_GOLDEN)
      for (let p = start + len - 1; p >= start; p--) {
        const f = FOLD[buf[p]!]!
        if (f === 0) return null
        h = Math.imul(h ^ f, HASH_PRIME)
      }
      const w = nodes[node * STRIDE + N_WILD]!
      if (w > 0) allow = w
      else if (w < 0) deny = -w
      h ^= h >>> 16
      h = Math.imul(h, HASH_MIX)
      h ^= h >>> 13
      const child = this.findWire(h, node, buf, start, len)
      if (child < 0) {
        if (k > 0 && !validWireLabels(buf, offs, k)) return null
        break
      }
      node = child
      if (k === 0) {
        const e = nodes[node * STRIDE + N_EXACT]!
        if (e > 0) allow = e
        else if (e < 0) deny = -e
      }
    }
    return deny !== 0 ? this.rules[deny - 1]! : allow !== 0 ? this.rules[allow - 1]! : null
  }

  /**
   * True iff some allow rule's exact name lies strictly below `name`, or some allow
   * wildcard `*.B` has B equal to or below it: the NODATA-instead-of-NXDOMAIN question
   * (RFC 8020). Deny rules do not count. The root (`.` or ``) has every allowed name below it.
   */
  hasAllowedBelow(name: string): boolean {
    let end = name.length
    if (end !== 0 && name.charCodeAt(end - 1) === DOT) end--
    if (end > MAX_NAME) return false
    const nodes = this.nodes
    let node = ROOT
    let i = end
    while (i > 0) {
      let h = Math.imul(node ^ HASH_SEED, HASH_GOLDEN)
      let j = i - 1
      for (; j >= 0; j--) {
        const c = name.charCodeAt(j)
        if (c === DOT) break
        const f = c < 0x80 ? FOLD[c]! : 0
        if (f === 0) return false
        h = Math.imul(h ^ f, HASH_PRIME)
      }
      const len = i - 1 - j
      if (len === 0 || len > MAX_LABEL) return false
      h ^= h >>> 16
      h = Math.imul(h, HASH_MIX)
      h ^= h >>> 13
      node = this.findText(h, node, name, j + 1, len)
      if (node < 0) return false
      if (j < 0) break
      // A dot at 0 leaves an empty first label.
      if (j === 0) return false
      i = j
    }
    return (nodes[node * STRIDE + N_LEN]! & F_ALLOWED_BELOW) !== 0
  }

  hasAllowedBelowWire(buf: Uint8Array, offset: number): boolean {
    const n = this.scanWire(buf, offset)
    if (n < 0) return false
    const offs = this.wireLabels
    let node = ROOT
    for (let k = n - 1; k >= 0; k--) {
      const start = offs[k]!
      const len = buf[start - 1]!
      let h = Math.imul(node ^ HASH_SEED, HASH_GOLDEN)
      for (let p = start + len - 1; p >= start; p--) {
        const f = FOLD[buf[p]!]!
        if (f === 0) return false
        h = Math.imul(h ^ f, HASH_PRIME)
      }
      h ^= h >>> 16
      h = Math.imul(h, HASH_MIX)
      h ^= h >>> 13
      node = this.findWire(h, node, buf, start, len)
      if (node < 0) return false
    }
    return (this.nodes[node * STRIDE + N_LEN]! & F_ALLOWED_BELOW) !== 0
  }

  /** The normalized pattern of a rule, rebuilt from the trie (kept out of the heap at 1 M rules). */
  patternOf(id: number): string {
    const ref = this.ruleRef[id]!
    let node = ref >> 1
    let s = (ref & 1) === 1 ? '*' : ''
    while (node !== ROOT) {
      const b = node * STRIDE
      const len = this.nodes[b + N_LEN]! & LEN_MASK
      const bytes = len <= INLINE_BYTES ? this.nodeBytes : this.labels
      const at = len <= INLINE_BYTES ? (b + N_LABEL) * 4 : this.nodes[b + N_LABEL]!
      if (s.length > 0) s += '.'
      s += String.fromCharCode(...bytes.subarray(at, at + len))
      node = this.nodes[b + N_PARENT]!
    }
    return s
  }

  wildcardOf(id: number): boolean {
    return (this.ruleRef[id]! & 1) === 1
  }

  /**
   * Forward pass over the length bytes: records label starts in `wireLabels` and
   * returns how many, or -1 on a pointer, an extended label type, a label running past
   * the buffer, a missing root byte or a name over 255 bytes.
   */
  private scanWire(buf: Uint8Array, offset: number): number {
    const offs = this.wireLabels
    const limit = buf.length
    if (!(offset >= 0 && offset < limit) || (offset | 0) !== offset) return -1
    let p = offset
    let n = 0
    for (;;) {
      const len = buf[p]!
      if (len === 0) return n
      if (len > MAX_LABEL) return -1
      const start = p + 1
      p = start + len
      // p is where the next length byte must be, and the root byte still follows.
      if (p >= limit || p - offset >= MAX_WIRE) return -1
      offs[n++] = start
    }
  }

  /** The slot of `parent`'s child with this label, or -1; probes only the region(s) its children live in. */
  private findText(h: number, parent: number, name: string, start: number, len: number): number {
    const flags = this.nodes[parent * STRIDE + N_LEN]!
    if ((flags & F_INNER_CHILDREN) !== 0) {
      const r = this.probeText(h, parent, name, start, len, 0, this.innerSize, this.innerScale)
      if (r >= 0 || (flags & F_LEAF_CHILDREN) === 0) return r
    }
    if ((flags & F_LEAF_CHILDREN) === 0) return -1
    return this.probeText(h, parent, name, start, len, this.innerSize, this.leafSize, this.leafScale)
  }

  private findWire(h: number, parent: number, buf: Uint8Array, start: number, len: number): number {
    const flags = this.nodes[parent * STRIDE + N_LEN]!
    if ((flags & F_INNER_CHILDREN) !== 0) {
      const r = this.probeWire(h, parent, buf, start, len, 0, this.innerSize, this.innerScale)
      if (r >= 0 || (flags & F_LEAF_CHILDREN) === 0) return r
    }
    if ((flags & F_LEAF_CHILDREN) === 0) return -1
    return this.probeWire(h, parent, buf, start, len, this.innerSize, this.leafSize, this.leafScale)
  }

  private probeText(h: number, parent: number, name: string, start: number, len: number, base: number, size: number, scale: number): number {
    const nodes = this.nodes
    const end = base + size
    let slot = base + (((h >>> 0) * scale) >>> 0)
    for (;;) {
      const b = slot * STRIDE
      const lenFlags = nodes[b + N_LEN]!
      if (lenFlags === 0) return -1
      if (nodes[b + N_HASH] === h && nodes[b + N_PARENT] === parent && (lenFlags & LEN_MASK) === len) {
        // Short labels sit in the record just read; longer ones in `labels`.
        const bytes = len <= INLINE_BYTES ? this.nodeBytes : this.labels
        const at = len <= INLINE_BYTES ? (b + N_LABEL) * 4 : nodes[b + N_LABEL]!
        let k = 0
        // The caller checked every char is ASCII, so FOLD's index is in range.
        while (k < len && bytes[at + k] === FOLD[name.charCodeAt(start + k)]) k++
        if (k === len) return slot
      }
      if (++slot === end) slot = base
    }
  }

  private probeWire(h: number, parent: number, buf: Uint8Array, start: number, len: number, base: number, size: number, scale: number): number {
    const nodes = this.nodes
    const end = base + size
    let slot = base + (((h >>> 0) * scale) >>> 0)
    for (;;) {
      const b = slot * STRIDE
      const lenFlags = nodes[b + N_LEN]!
      if (lenFlags === 0) return -1
      if (nodes[b + N_HASH] === h && nodes[b + N_PARENT] === parent && (lenFlags & LEN_MASK) === len) {
        const bytes = len <= INLINE_BYTES ? this.nodeBytes : this.labels
        const at = len <= INLINE_BYTES ? (b + N_LABEL) * 4 : nodes[b + N_LABEL]!
        let k = 0
        while (k < len && bytes[at + k] === FOLD[buf[start + k]!]) k++
        if (k === len) return slot
      }
      if (++slot === end) slot = base
    }
  }
}

/** `name[0, end)` is dot-separated labels of 1–63 valid chars. */
function validTextLabels(name: string, end: number): boolean {
  let len = 0
  for (let i = 0; i < end; i++) {
    const c = name.charCodeAt(i)
    if (c === DOT) {
      if (len === 0) return false
      len = 0
    } else if ((c < 0x80 ? FOLD[c]! : 0) === 0 || ++len > MAX_LABEL) {
      return false
    }
  }
  return len !== 0
}

/** Every byte of wire labels 0 … count-1 is valid (lengths were checked by scanWire). */
function validWireLabels(buf: Uint8Array, offs: Int32Array, count: number): boolean {
  for (let k = 0; k < count; k++) {
    const start = offs[k]!
    const end = start + buf[start - 1]!
    for (let p = start; p < end; p++) if (FOLD[buf[p]!] === 0) return false
  }
  return true
}

/**
 * A rule as callers see it. Rules of one entry share that entry's object, and the
 * pattern is rebuilt from the trie on demand: three fields per rule keep 1 M rules
 * inside the heap budget (see bench/RESULTS-matcher.md).
 */
class CompiledRule implements Rule {
  readonly id: number
  readonly #entry: PolicyEntry
  readonly #policy: Policy

  constructor(id: number, entry: PolicyEntry, policy: Policy) {
    this.id = id
    this.#entry = entry
    this.#policy = policy
  }

  get action(): Action {
    return this.#entry.action
  }
  /** Allocates a string: for explanations and logs, not for the per-query path. */
  get pattern(): string {
    return this.#policy.patternOf(this.id)
  }
  get wildcard(): boolean {
    return this.#policy.wildcardOf(this.id)
  }
  get entry(): string {
    return this.#entry.entry
  }
  get ports(): readonly PortSpec[] {
    return this.#entry.ports
  }
  get source(): string {
    return this.#entry.source
  }

  /** Loggers see the rule, not the trie behind it. */
  toJSON(): Rule {
    const { id, action, pattern, wildcard, entry, ports, source } = this
    return { id, action, pattern, wildcard, entry, ports, source }
  }

  [Symbol.for('nodejs.util.inspect.custom')](): Rule {
    return this.toJSON()
  }
}
