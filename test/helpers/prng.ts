/**
 * mulberry32: a small seeded generator, so a random corpus is the same on every run and a
 * failing seed can be replayed. Shared by the seeded tests and bench/matcher.ts.
 */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
