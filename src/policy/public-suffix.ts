/**
 * The one rule for wildcards and public suffixes, shared by the configuration loader (an
 * allow wildcard at or above a public suffix is refused unless its entry says
 * `public_suffix: true`) and `egressd suggest` (which never proposes one). Pure: the
 * Public Suffix List compiled into tldts, ICANN and private sections both, no I/O.
 *
 * `*.B` stays inside one owner's names when B is a registrable domain (`example.co.uk`,
 * `alice.github.io`) or lies below one. Otherwise it lets through names that anyone can
 * register (`*.com`, `*.co.uk`) or publish (`*.github.io`, `*.s3.amazonaws.com`: the
 * private section lists the hosting platforms whose customers pick their own names).
 */
import { getDomain, parse } from 'tldts'

const PSL = { allowPrivateDomains: true } as const

export interface PublicSuffixHit {
  /** The public suffix `*.base` reaches: base itself, or the suffix base belongs to. */
  readonly suffix: string
  /** icann: a registry (`com`, `co.uk`); private: a platform (`github.io`); unlisted: a label no list names (`lan`, `local`). */
  readonly section: 'icann' | 'private' | 'unlisted'
}

/**
 * null when `*.base` stays within one registrable domain; otherwise the public suffix it
 * covers. `base` is a normalized name (lowercase, punycode, no trailing dot), as
 * expandPattern returns it. A one-label base is always a hit: tldts' default rule makes
 * every unknown top-level label a public suffix.
 *
 * Known limit: a registrable domain that has public suffixes below it
 * (`amazonaws.com` holds `s3.amazonaws.com`) is not a hit; tldts answers for a name, it
 * cannot list the suffixes below one.
 */
export function wildcardOverPublicSuffix(base: string): PublicSuffixHit | null {
  const domain = getDomain(base, PSL)
  if (domain !== null && (base === domain || base.endsWith('.' + domain))) return null
  const p = parse(base, PSL)
  return { suffix: p.publicSuffix ?? base, section: p.isPrivate ? 'private' : p.isIcann ? 'icann' : 'unlisted' }
}

/** What `*.base` reaches, for "allows every name under …" in the configuration error. */
export function describeHit(hit: PublicSuffixHit): string {
  switch (hit.section) {
    case 'icann':
      return `"${hit.suffix}", a public suffix: anyone can register names under it`
    case 'private':
      return `"${hit.suffix}", a public suffix (private section of the Public Suffix List): anyone can publish names under it`
    case 'unlisted':
      return `"${hit.suffix}", a top-level name: no one owns the names under it`
  }
}
