/**
 * Lookups in the compiled suffix trie (layout in trie.ts, built by compile.ts). Reads
 * the typed arrays only: no split, no Buffer decoding, no allocation per lookup. One
 * forward pass validates the name and case-folds it into packed label words and
 * parent-independent label hashes (scanText/scanWire); the walk then goes from the last
 * label to the first, mixing in the parent slot and comparing words, not bytes.
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
const RULE_CHUNK_BITS = 12
const MAX_LABEL = 63
const MAX_NAME = 253
/** Wire form: length bytes + labels + the root byte. */
const MAX_WIRE = 255

export class Policy {
  /** Number of expanded rules (the egressd_policy_rules gauge). */
  readonly size: number

  private readonly nodes: Int32Array
  /** Region sizes in records; a hash h goes to slot base + ⌊h × size / 2³²⌋ of its region. */
  private readonly innerSize: number
  private readonly innerScale: number
  private readonly leafSize: number
  private readonly leafScale: number
  private readonly labelWords: Int32Array
  private readonly ruleRef: Int32Array
  /**
   * The name being matched, from the one forward pass that validates it: per label k,
   * keys[4k] its label hash (trie.ts), keys[4k+1] its length, keys[4k+2] the index of
   * its packed words in `words`. 127 labels fit in 255 bytes, their words in 191.
   */
  private readonly keys = new Int32Array(128 * 4)
  private readonly words = new Int32Array(256)

  /** Built by compilePolicy; not meant to be called elsewhere. */
  constructor(trie: CompiledTrie, entries: readonly PolicyEntry[]) {
    this.nodes = trie.nodes
    this.innerSize = trie.innerSize
    this.innerScale = trie.innerSize / 4294967296
    this.leafSize = trie.leafSize
    this.leafScale = trie.leafSize / 4294967296
    this.labelWords = trie.labelWords
    this.ruleRef = trie.ruleRef
    this.ruleEntry = trie.ruleEntry
    this.entries = entries
    this.size = trie.ruleEntry.length
    this.ruleChunks = new Array<Rule[] | undefined>((this.size >> RULE_CHUNK_BITS) + 1)
  }

  private readonly ruleEntry: Int32Array
  private readonly entries: readonly PolicyEntry[]
  /**
   * Rule objects, made when first asked for (ruleOf), in chunks of 4 096: building all of
   * them up front cost ~0.5–0.8 s at 1 M rules on the loaded 2-core VM, and a reload
   * compiled in a worker must not spend that on the event loop. Two array reads a lookup.
   */
  private readonly ruleChunks: (Rule[] | undefined)[]

  /** Every expanded rule; `rules[i].id === i`. Builds every Rule object: for tests and tools, not the daemon. */
  get rules(): readonly Rule[] {
    const out: Rule[] = []
    for (let id = 0; id < this.size; id++) out.push(this.ruleAt(id))
    return out
  }

  /** The rule with this id (0 ≤ id < size). */
  ruleAt(id: number): Rule {
    const chunk = (this.ruleChunks[id >> RULE_CHUNK_BITS] ??= new Array<Rule>(1 << RULE_CHUNK_BITS))
    const i = id & ((1 << RULE_CHUNK_BITS) - 1)
    return (chunk[i] ??= new CompiledRule(id, this.entries[this.ruleEntry[id]!]!, this))
  }

  /** The deciding rule for a name as text (one trailing dot ignored), or null. */
  match(name: string): Rule | null {
    let end = name.length
    if (end !== 0 && name.charCodeAt(end - 1) === DOT) end--
    if (end === 0 || end > MAX_NAME) return null
    const n = this.scanText(name, end)
    return n < 0 ? null : this.ruleOf(this.decide(n))
  }

  /**
   * The deciding rule for a name in DNS wire format at `offset` (length-prefixed labels,
   * ending with a 0 byte). A compression pointer or any malformation gives null.
   */
  matchWire(buf: Uint8Array, offset: number): Rule | null {
    return this.ruleOf(this.verdictWire(buf, offset))
  }

  /**
   * matchWire's answer as a number, for the per-query path: id + 1 of the deciding rule
   * when it allows, -(id + 1) when it denies, 0 when no rule matches.
   * It reads the trie's typed arrays only. At 100 k rules, reading `action` through the
   * Rule object and the entry behind it is two more random reads into the heap, and
   * those cost more than the lookup itself: 480–750 ns against 190–290 ns a lookup
   * (bench/RESULTS.md, matcher section). The caller needs the Rule only to explain the
   * verdict or to read its ports (ruleOf).
   */
  verdictWire(buf: Uint8Array, offset: number): number {
    const n = this.scanWire(buf, offset)
    return n <= 0 ? 0 : this.decide(n)
  }

  /** The deciding rule behind a verdict from verdictWire, or null for 0. */
  ruleOf(verdict: number): Rule | null {
    return verdict === 0 ? null : this.ruleAt((verdict < 0 ? -verdict : verdict) - 1)
  }

  /**
   * The NODATA-instead-of-NXDOMAIN question (RFC 8020: NXDOMAIN denies every name below,
   * so a downstream resolver would stop asking for allowed ones). True iff
   * - some allow rule's exact name lies strictly below `name`, or some allow wildcard
   *   `*.B` has B equal to or below it (deny rules are not consulted there), or
   * - the names directly below `name` are allowed by a wildcard at or above it and no
   *   deny wildcard at or above it takes them back: `deny: [d.cdn.example]` under
   *   `allow: ["*.cdn.example"]` blocks d.cdn.example itself but allows x.d.cdn.example
   *   (as long as a child still fits in 253 bytes).
   * The root (`.` or ``) has every allowed name below it.
   */
  hasAllowedBelow(name: string): boolean {
    let end = name.length
    if (end !== 0 && name.charCodeAt(end - 1) === DOT) end--
    if (end > MAX_NAME) return false
    const n = end === 0 ? 0 : this.scanText(name, end)
    return n >= 0 && this.allowedBelow(n)
  }

  hasAllowedBelowWire(buf: Uint8Array, offset: number): boolean {
    const n = this.scanWire(buf, offset)
    return n >= 0 && this.allowedBelow(n)
  }

  /** The normalized pattern of a rule, rebuilt from the trie (kept out of the heap at 1 M rules). */
  patternOf(id: number): string {
    const ref = this.ruleRef[id]!
    let node = ref >> 1
    let s = (ref & 1) === 1 ? '*' : ''
    while (node !== ROOT) {
      const b = node * STRIDE
      const len = this.nodes[b + N_LEN]! & LEN_MASK
      const words = len <= INLINE_BYTES ? this.nodes : this.labelWords
      const at = len <= INLINE_BYTES ? b + N_LABEL : this.nodes[b + N_LABEL]!
      if (s.length > 0) s += '.'
      for (let q = 0; q < len; q++) s += String.fromCharCode((words[at + (q >> 2)]! >>> (8 * (q & 3))) & 0xff)
      node = this.nodes[b + N_PARENT]!
    }
    return s
  }

  wildcardOf(id: number): boolean {
    return (this.ruleRef[id]! & 1) === 1
  }

  /**
   * The one pass over a text name `name[0, end)`: checks every label (1–63 valid chars)
   * and fills `keys`/`words`; the number of labels, or -1 if the name is invalid.
   * Validating up front replaced a second pass over the labels left below a miss.
   */
  private scanText(name: string, end: number): number {
    const keys = this.keys
    const words = this.words
    // FOLD is an imported binding; a local saved ~15 ns per lookup (scan alone, micro-benchmark).
    const fold = FOLD
    let n = 0
    let wo = 0
    let i = 0
    for (;;) {
      const start = i
      const kb = n << 2
      keys[kb + 2] = wo
      let h = HASH_SEED
      let cur = 0
      let shift = 0
      for (; i < end; i++) {
        const c = name.charCodeAt(i)
        // FOLD maps the dot to 0 too: one test per valid char.
        const f = c < 0x80 ? fold[c]! : 0
        if (f === 0) {
          if (c === DOT) break
          return -1
        }
        cur |= f << shift
        shift += 8
        if (shift === 32) {
          words[wo++] = cur
          h = Math.imul(h ^ cur, HASH_PRIME)
          cur = 0
          shift = 0
        }
      }
      const len = i - start
      if (len === 0 || len > MAX_LABEL) return -1
      if (shift !== 0) {
        words[wo++] = cur
        h = Math.imul(h ^ cur, HASH_PRIME)
      }
      keys[kb] = h ^ len
      keys[kb + 1] = len
      n++
      if (i === end) return n
      i++ // the dot
    }
  }

  /**
   * The same pass over a wire name: the number of labels, or -1 on a pointer, an
   * extended label type, a label running past the buffer, a missing root byte, a name
   * over 255 bytes or an invalid byte.
   */
  private scanWire(buf: Uint8Array, offset: number): number {
    const keys = this.keys
    const words = this.words
    const fold = FOLD
    const limit = buf.length
    if (!(offset >= 0 && offset < limit) || (offset | 0) !== offset) return -1
    let p = offset
    let n = 0
    let wo = 0
    for (;;) {
      const len = buf[p]!
      if (len === 0) return n
      if (len > MAX_LABEL) return -1
      let q = p + 1
      p = q + len
      // p is where the next length byte must be, and the root byte still follows.
      if (p >= limit || p - offset >= MAX_WIRE) return -1
      const kb = n << 2
      keys[kb + 1] = len
      keys[kb + 2] = wo
      let h = HASH_SEED
      for (; q + 4 <= p; q += 4) {
        const f0 = fold[buf[q]!]!
        const f1 = fold[buf[q + 1]!]!
        const f2 = fold[buf[q + 2]!]!
        const f3 = fold[buf[q + 3]!]!
        // One branch for four bytes: f - 1 is negative only for an invalid byte.
        if (((f0 - 1) | (f1 - 1) | (f2 - 1) | (f3 - 1)) < 0) return -1
        const w = f0 | (f1 << 8) | (f2 << 16) | (f3 << 24)
        words[wo++] = w
        h = Math.imul(h ^ w, HASH_PRIME)
      }
      if (q < p) {
        // 1–3 bytes left, unrolled: the loop took ~10 % of a 5-rule wire lookup.
        const r = p - q
        const f0 = fold[buf[q]!]!
        const f1 = r > 1 ? fold[buf[q + 1]!]! : 1
        const f2 = r > 2 ? fold[buf[q + 2]!]! : 1
        if (((f0 - 1) | (f1 - 1) | (f2 - 1)) < 0) return -1
        const w = f0 | (r > 1 ? f1 << 8 : 0) | (r > 2 ? f2 << 16 : 0)
        words[wo++] = w
        h = Math.imul(h ^ w, HASH_PRIME)
      }
      keys[kb] = h ^ len
      n++
    }
  }

  /** The verdict (verdictWire) for the `n` scanned labels (n ≥ 1). */
  private decide(n: number): number {
    const nodes = this.nodes
    let node = ROOT
    let allow = 0
    let deny = 0
    for (let k = n - 1; ; k--) {
      // A label remains below `node`, so its wildcard applies whatever comes next.
      const w = nodes[node * STRIDE + N_WILD]!
      if (w > 0) allow = w
      else if (w < 0) deny = -w
      const child = this.find(node, k)
      if (child < 0) break
      node = child
      if (k === 0) {
        const e = nodes[node * STRIDE + N_EXACT]!
        if (e > 0) allow = e
        else if (e < 0) deny = -e
        break
      }
    }
    return deny !== 0 ? -deny : allow
  }

  private allowedBelow(n: number): boolean {
    const nodes = this.nodes
    let node = ROOT
    // The wildcards met on the way apply to a child of the name, whatever its label.
    let allow = 0
    let deny = 0
    for (let k = n - 1; ; k--) {
      const w = nodes[node * STRIDE + N_WILD]!
      if (w > 0) allow = w
      else if (w < 0) deny = -w
      if (k < 0) return (nodes[node * STRIDE + N_LEN]! & F_ALLOWED_BELOW) !== 0 || (deny === 0 && allow !== 0 && this.hasRoomBelow(n))
      const child = this.find(node, k)
      if (child < 0) return deny === 0 && allow !== 0 && this.hasRoomBelow(n)
      node = child
    }
  }

  /** Whether a one-byte label still fits below the `n` scanned labels (253 bytes as text, 255 on the wire). */
  private hasRoomBelow(n: number): boolean {
    let length = n - 1
    for (let k = 0; k < n; k++) length += this.keys[(k << 2) + 1]!
    return length + 2 <= MAX_NAME
  }

  /** The slot of `parent`'s child with scanned label k, or -1; probes only the region(s) its children live in. */
  private find(parent: number, k: number): number {
    const flags = this.nodes[parent * STRIDE + N_LEN]!
    // nodeHash (trie.ts), inlined.
    const h = Math.imul(this.keys[k << 2]! ^ Math.imul(parent, HASH_GOLDEN), HASH_MIX)
    if ((flags & F_INNER_CHILDREN) !== 0) {
      const r = this.probe(h, parent, k, 0, this.innerSize, this.innerScale)
      if (r >= 0 || (flags & F_LEAF_CHILDREN) === 0) return r
    }
    if ((flags & F_LEAF_CHILDREN) === 0) return -1
    return this.probe(h, parent, k, this.innerSize, this.leafSize, this.leafScale)
  }

  private probe(h: number, parent: number, k: number, base: number, size: number, scale: number): number {
    const nodes = this.nodes
    const words = this.words
    const len = this.keys[(k << 2) + 1]!
    const wo = this.keys[(k << 2) + 2]!
    const end = base + size
    let slot = base + (((h >>> 0) * scale) >>> 0)
    for (;;) {
      const b = slot * STRIDE
      const lenFlags = nodes[b + N_LEN]!
      if (lenFlags === 0) return -1
      if (nodes[b + N_HASH] === h && nodes[b + N_PARENT] === parent && (lenFlags & LEN_MASK) === len) {
        if (len <= INLINE_BYTES) {
          // Short labels sit in the record just read: at most three word compares.
          if (
            nodes[b + N_LABEL] === words[wo] &&
            (len <= 4 || (nodes[b + N_LABEL + 1] === words[wo + 1] && (len <= 8 || nodes[b + N_LABEL + 2] === words[wo + 2])))
          ) {
            return slot
          }
        } else if (this.sameLongLabel(nodes[b + N_LABEL]!, wo, len)) {
          return slot
        }
      }
      if (++slot === end) slot = base
    }
  }

  private sameLongLabel(at: number, wo: number, len: number): boolean {
    const lw = this.labelWords
    const words = this.words
    const nw = (len + 3) >> 2
    for (let i = 0; i < nw; i++) if (lw[at + i] !== words[wo + i]) return false
    return true
  }
}

/**
 * A rule as callers see it. Rules of one entry share that entry's object, and the
 * pattern is rebuilt from the trie on demand: three fields per rule keep 1 M rules
 * inside the heap budget (see bench/RESULTS.md (matcher section)).
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
