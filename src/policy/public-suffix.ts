/**
 * The one rule for wildcards and public suffixes, shared by the configuration loader (an
 * allow wildcard at or above a public suffix is refused unless its entry says
 * `public_suffix: true`) and `egressd suggest` (which never proposes one). Pure: the
 * Public Suffix List compiled into tldts, ICANN and private sections both, no I/O.
 *
 * `*.B` stays inside one owner's names when B is a registrable domain (`example.co.uk`,
 * `alice.github.io`) or lies below one, and no public suffix lies below B. Otherwise it
 * lets through names that anyone can register (`*.com`, `*.co.uk`) or publish
 * (`*.github.io`, `*.s3.amazonaws.com`: the private section lists the hosting platforms
 * whose customers pick their own names), or reaches such names from above
 * (`*.amazonaws.com` holds `*.s3.amazonaws.com`, every customer's bucket).
 */
import { createRequire } from 'node:module'
import { getDomain, parse } from 'tldts'

const PSL = { allowPrivateDomains: true } as const

export interface PublicSuffixHit {
  /** The public suffix `*.base` reaches: base itself, or the suffix base belongs to. */
  readonly suffix: string
  /** icann: a registry (`com`, `co.uk`); private: a platform (`github.io`); unlisted: a label no list names (`lan`, `local`). */
  readonly section: 'icann' | 'private' | 'unlisted'
  /** The suffix lies below base (`s3.amazonaws.com` for `*.amazonaws.com`), not at or above it. */
  readonly below?: true
}

/**
 * null when `*.base` stays within one registrable domain; otherwise the public suffix it
 * covers. `base` is a normalized name (lowercase, punycode, no trailing dot), as
 * expandPattern returns it. A one-label base is always a hit: tldts' default rule makes
 * every unknown top-level label a public suffix. A registrable domain with a public
 * suffix below it (`amazonaws.com` holds `s3.amazonaws.com`, `eu-west-1.amazonaws.com`
 * holds `s3.eu-west-1.amazonaws.com`) is a hit too, naming the nearest such suffix.
 */
export function wildcardOverPublicSuffix(base: string): PublicSuffixHit | null {
  const domain = getDomain(base, PSL)
  if (domain !== null && (base === domain || base.endsWith('.' + domain))) return suffixBelow(base)
  const p = parse(base, PSL)
  return { suffix: p.publicSuffix ?? base, section: p.isPrivate ? 'private' : p.isIcann ? 'icann' : 'unlisted' }
}

/**
 * tldts' compiled rule trie, read because its API answers for one name and cannot list
 * the rules below one. Not a public export, so package.json pins tldts to one exact
 * version (an `npm install -g` of the tarball resolves from package.json, not the lock);
 * the shape is checked here, and test/config/public-suffix.test.ts fails
 * (`*.amazonaws.com` is no longer refused) if an upgrade changes it. Nodes are reached
 * from `rulesRoot` by the labels of a name, right to left; node n's edges are edgeStart[n] .. edgeStart[n + 1] - 1, each with a
 * label (edgeLength characters of labelText, in edge order) and a child; nodeFlags 1
 * marks an ICANN rule, 2 a private one.
 */
interface RuleTrie {
  readonly nodeFlags: Uint8Array
  readonly edgeStart: ArrayLike<number>
  readonly edgeLength: ArrayLike<number>
  readonly edgeChild: ArrayLike<number>
  readonly labelText: string
  readonly rulesRoot: number
  readonly edgeOffset: Uint32Array
}

let trie: RuleTrie | null | undefined

function ruleTrie(): RuleTrie | null {
  if (trie !== undefined) return trie
  trie = null
  try {
    const t = createRequire(import.meta.url)('tldts/dist/cjs/src/data/trie.js') as Partial<RuleTrie>
    const { nodeFlags, edgeStart, edgeLength, edgeChild, labelText, rulesRoot } = t
    if (!(nodeFlags instanceof Uint8Array) || edgeStart === undefined || edgeLength === undefined || edgeChild === undefined ||
      typeof labelText !== 'string' || typeof rulesRoot !== 'number' || edgeStart.length !== nodeFlags.length + 1) return null
    const edgeOffset = new Uint32Array(edgeLength.length)
    for (let e = 0, at = 0; e < edgeLength.length; e++) {
      edgeOffset[e] = at
      at += edgeLength[e]!
    }
    trie = { nodeFlags, edgeStart, edgeLength, edgeChild, labelText, rulesRoot, edgeOffset }
  } catch {
    // No such file in this tldts: the check of suffixes below a domain is skipped (the test says so).
  }
  return trie
}

function edgeLabel(t: RuleTrie, e: number): string {
  return t.labelText.slice(t.edgeOffset[e]!, t.edgeOffset[e]! + t.edgeLength[e]!)
}

/**
 * label → child of a node, built on first use: `com` has thousands of edges, and a scan of
 * them per entry made a wildcard under .com cost 26 us instead of 1 (100 k entries
 * measured); with the map it is a hash lookup per label.
 */
const childMaps = new Map<number, Map<string, number>>()

function childOf(t: RuleTrie, node: number, label: string): number {
  let m = childMaps.get(node)
  if (m === undefined) {
    m = new Map()
    for (let e = t.edgeStart[node]!; e < t.edgeStart[node + 1]!; e++) m.set(edgeLabel(t, e), t.edgeChild[e]!)
    childMaps.set(node, m)
  }
  return m.get(label) ?? m.get('*') ?? -1
}

/** The nearest public suffix strictly below `base` (breadth first, so `s3.amazonaws.com` before deeper ones), or null. */
function suffixBelow(base: string): PublicSuffixHit | null {
  const t = ruleTrie()
  if (t === null) return null
  let node = t.rulesRoot
  for (let end = base.length; end > 0; ) {
    const dot = base.lastIndexOf('.', end - 1)
    node = childOf(t, node, base.slice(dot + 1, end))
    if (node < 0) return null
    end = dot
  }
  // The subtree below one name is small (amazonaws.com: a few hundred nodes); a node may be shared, so each is visited once.
  const seen = new Set<number>([node])
  let level: { node: number; name: string }[] = [{ node, name: base }]
  while (level.length > 0) {
    const next: { node: number; name: string }[] = []
    for (const { node: n, name } of level) {
      for (let e = t.edgeStart[n]!; e < t.edgeStart[n + 1]!; e++) {
        const child = t.edgeChild[e]!
        const below = `${edgeLabel(t, e)}.${name}`
        const flag = t.nodeFlags[child]!
        if (flag !== 0) return { suffix: below, section: flag === 2 ? 'private' : 'icann', below: true }
        if (!seen.has(child)) {
          seen.add(child)
          next.push({ node: child, name: below })
        }
      }
    }
    level = next
  }
  return null
}

/** What `*.base` reaches, for "allows every name under …" in the configuration error. */
export function describeHit(hit: PublicSuffixHit): string {
  if (hit.below) {
    const list = hit.section === 'private' ? 'private section of the Public Suffix List' : 'Public Suffix List'
    return `"${hit.suffix}", a public suffix inside it (${list}): anyone can ${hit.section === 'private' ? 'publish' : 'register'} names under it`
  }
  switch (hit.section) {
    case 'icann':
      return `"${hit.suffix}", a public suffix: anyone can register names under it`
    case 'private':
      return `"${hit.suffix}", a public suffix (private section of the Public Suffix List): anyone can publish names under it`
    case 'unlisted':
      return `"${hit.suffix}", a top-level name: no one owns the names under it`
  }
}
