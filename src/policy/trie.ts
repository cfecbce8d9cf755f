/**
 * Layout of the compiled suffix trie, shared by the builder (compile.ts) and the
 * reader (match.ts). Pure data; no I/O.
 *
 * A node is a domain suffix (`com`, `example.com`); the root has none. Each non-root
 * node has exactly one incoming edge, so node and edge are one record: its parent, its
 * label, and the rules that sit on it.
 *
 * The records ARE the hash table: a node lives in the open-addressing slot of
 * hash(parent slot, label), and its id is that slot. Finding a child therefore reads one
 * 32-byte record (linear probing moves to the next one), where a table of node ids plus
 * separate records read two places at random. Random reads into a multi-megabyte array
 * dominate a lookup: at 100 k rules, 16 cached names took ~200 ns per lookup and the
 * corpus ~1 µs with a separate table, ~470 ns with records in the slots (same machine,
 * same run conditions). The number of distinct cache lines per label is what this
 * layout minimizes.
 *
 * Per-node sorted children with binary search were not chosen: a node like `example.com`
 * may have 1 M children, ~20 label comparisons each a cache miss.
 *
 * The records form two tables (regions of one array): inner nodes (those with
 * children, the root first) and leaves. Every lookup walks through the inner nodes, a few
 * percent of all nodes, which therefore stay in cache and within TLB reach instead of
 * being scattered among a million cold leaves; a leaf costs one cold read, and a node's
 * F_*_CHILDREN flags say which region(s) to probe for its children. (On the loaded
 * 2-core VM where it was measured, the gain over one region stayed within the noise.)
 *
 * Region sizes are not powers of two (slot = hash × size / 2³²), so that 1 M rules cost
 * ~1.4 records each rather than up to 2.8 after rounding. Power-of-two regions with a
 * mask were measured: ~130 instead of ~160 ns per wire lookup in the 5-rule micro-
 * benchmark, no difference beyond the noise at 100 k rules (~530 ns), and 158 instead of
 * 116 B/rule (typed arrays included) at 100 k, 142 instead of 119 at 1 M: not kept.
 */

export const STRIDE = 8
/** Full 32-bit hash of (parent, label): rejects probe collisions cheaply. */
export const N_HASH = 0
export const N_PARENT = 1
/** Label length in the low byte, flags above it; 0 means an empty slot. */
export const N_LEN = 2
/** The exact-name rule on this node: 0 none, id+1 allow, -(id+1) deny (deny kept over allow). */
export const N_EXACT = 3
/** The `*.<this node>` rule, encoded like N_EXACT. */
export const N_WILD = 4
/**
 * Words 5–7: the label packed as words (see packLabel) when it has at most INLINE_BYTES,
 * otherwise word 5 is the offset of its words in `labelWords`.
 */
export const N_LABEL = 5
export const INLINE_BYTES = 12

export const LEN_MASK = 0xff
/** Set on every record in use, the root included. */
export const F_USED = 0x100
/** Some allow rule's exact name is strictly below this node, or an allow wildcard sits on or below it. */
export const F_ALLOWED_BELOW = 0x200
/** Some child of this node has children itself: it lives in the inner region. */
export const F_INNER_CHILDREN = 0x400
/** Some child of this node is a leaf: it lives in the leaf region. */
export const F_LEAF_CHILDREN = 0x800
/** The root's slot. Other nodes probe past it: its parent, -1, matches no lookup. */
export const ROOT = 0

/** Bound on used slots / table size: linear probing stays short (~1.5 records per hit). */
export const MAX_LOAD = 0.7

export const HASH_SEED = 0x811c9dc5 | 0
export const HASH_GOLDEN = 0x9e3779b1 | 0
export const HASH_PRIME = 0x01000193
export const HASH_MIX = 0x85ebca6b | 0

/**
 * Labels are keyed as words: byte q of the (lowercase) label goes to bits 8·(q mod 4) of
 * word ⌊q/4⌋, unused high bytes of the last word are 0. A lookup packs the name's bytes
 * while validating them, then compares a candidate record with ⌈len/4⌉ word compares
 * instead of re-reading and re-folding every byte; the label's hash is one multiply per
 * word rather than per byte. (Per-byte FNV plus a byte-wise compare in the probe took
 * ~195 ns per wire lookup in the 5-rule, 8-name micro-benchmark, words ~160 ns.)
 *
 * The label hash does not depend on the parent, so a lookup computes it for every
 * label in the one forward pass that validates the name; nodeHash then mixes in the
 * parent during the walk. The lookups in match.ts inline this arithmetic: it MUST stay
 * identical to them.
 */
export function labelHashBytes(bytes: Uint8Array, start: number, len: number): number {
  let h = HASH_SEED
  for (let q = 0; q < len; q += 4) h = Math.imul(h ^ packWord(bytes, start + q, Math.min(4, len - q)), HASH_PRIME)
  return h ^ len
}

/** Word k of a label (see labelHashBytes). */
export function packWord(bytes: Uint8Array, at: number, n: number): number {
  let w = 0
  for (let m = 0; m < n; m++) w |= bytes[at + m]! << (8 * m)
  return w
}

/**
 * The slot hash of a label (its labelHashBytes value) under `parent`. Slots come from
 * the high bits (hash × size / 2³²), which a multiply mixes every input bit into, so
 * one multiply suffices where a full avalanche (two more multiplies and shifts) cost
 * ~3–9 ns per lookup in the 5-rule micro-benchmark (medians of 5 runs each, wire ~104 →
 * ~101 ns, text ~137 → ~128 ns); at 1 M rules the mean displacement from the home slot
 * stayed 1.17 records (the linear-probing ideal at load 0.7), the maximum 109 vs 129.
 */
export function nodeHash(parent: number, labelHash: number): number {
  return Math.imul(labelHash ^ Math.imul(parent, HASH_GOLDEN), HASH_MIX)
}

/** Same hash over a normalized (lowercase ASCII) label in a string (the builder's own table). */
export function hashLabelText(parent: number, text: string, start: number, end: number): number {
  let h = Math.imul(parent ^ HASH_SEED, HASH_GOLDEN)
  for (let i = end - 1; i >= start; i--) h = Math.imul(h ^ text.charCodeAt(i), HASH_PRIME)
  h ^= h >>> 16
  h = Math.imul(h, HASH_MIX)
  return h ^ (h >>> 13)
}

/**
 * Byte class table: lowercase value for `a-z 0-9 - _` (uppercase folded), 0 for any
 * other byte, the dot included.
 */
export const FOLD: Uint8Array = (() => {
  const t = new Uint8Array(256)
  for (let c = 0x61; c <= 0x7a; c++) t[c] = c
  for (let c = 0x41; c <= 0x5a; c++) t[c] = c | 0x20
  for (let c = 0x30; c <= 0x39; c++) t[c] = c
  t[0x2d] = 0x2d
  t[0x5f] = 0x5f
  return t
})()

/** What compile.ts hands to the Policy. */
export interface CompiledTrie {
  /** `innerSize + leafSize` records of STRIDE words: the inner region first (the root at 0), then the leaves. */
  readonly nodes: Int32Array
  readonly innerSize: number
  readonly leafSize: number
  /** Labels longer than INLINE_BYTES, packed as words (see labelHashBytes), each from a word boundary. */
  readonly labelWords: Int32Array
  /** Per rule id: the entry it came from. */
  readonly ruleEntry: Int32Array
  /** Per rule id: node slot << 1 | wildcard. */
  readonly ruleRef: Int32Array
}
