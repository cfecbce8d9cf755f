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
 * ~1.4 records each rather than up to 2.8 after rounding.
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
 * Words 5–7: the label's bytes when it has at most INLINE_BYTES (read through a byte
 * view of the records), otherwise word 5 is the offset of its bytes in `labels`.
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
 * The hash of a label under `parent`, over its bytes from last to first (the order in
 * which a right-to-left walk over text meets them). The lookups in match.ts inline this
 * arithmetic: it MUST stay identical to them.
 */
export function hashLabelBytes(parent: number, bytes: Uint8Array, start: number, len: number): number {
  let h = Math.imul(parent ^ HASH_SEED, HASH_GOLDEN)
  for (let i = start + len - 1; i >= start; i--) h = Math.imul(h ^ bytes[i]!, HASH_PRIME)
  h ^= h >>> 16
  h = Math.imul(h, HASH_MIX)
  return h ^ (h >>> 13)
}

/** Same hash over a normalized (lowercase ASCII) label in a string. */
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
  /** Labels longer than INLINE_BYTES. */
  readonly labels: Uint8Array
  /** Per rule id: the entry it came from. */
  readonly ruleEntry: Int32Array
  /** Per rule id: node slot << 1 | wildcard. */
  readonly ruleRef: Int32Array
}
