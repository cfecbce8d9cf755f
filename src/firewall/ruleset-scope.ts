import type { SetGroup } from './nft-script.js'

/**
 * The chains of config/nftables/egressd.nft that read each set group; its forward
 * chain jumps to the one its EGRESSD_SCOPE define names.
 */
export const SCOPE_CHAINS = {
  shared: 'shared_scope',
  device: 'device_scope',
  mac: 'device_mac_scope',
} as const satisfies Record<SetGroup, string>

export type ScopeChain = (typeof SCOPE_CHAINS)[SetGroup]

const CHAIN_NAMES: ReadonlySet<string> = new Set(Object.values(SCOPE_CHAINS))

/** The config that fills the sets a scope chain reads: the other half of the hint. */
export const CHAIN_CONFIG: Record<ScopeChain, string> = {
  shared_scope: 'scope: shared',
  device_scope: 'scope: device, device_key: address',
  device_mac_scope: 'scope: device, device_key: mac',
}

/** `nft` arguments that list the forward chain of egressd's table. */
export function forwardChainArgs(table: string): string[] {
  return ['-j', 'list', 'chain', 'inet', table, 'forward']
}

/** Nesting of nft's JSON is a few levels (rule → expr → vmap → set → pair); a deeper document is not walked further. */
const MAX_DEPTH = 32

/**
 * Reads `nft -j list chain inet TABLE forward` (or `list table`, `list ruleset`: only
 * the chain named forward is read) and returns the scope chains its rules jump to or
 * go to, in rule order, each once: in a plain `jump`/`goto`, or inside a verdict map.
 * Null when the listing holds no chain named forward (the operator's own ruleset) or
 * is not nft's JSON; an empty array when the chain exists and names no scope chain.
 */
export function forwardScopeChains(json: string): ScopeChain[] | null {
  let doc: unknown
  try {
    doc = JSON.parse(json)
  } catch {
    return null
  }
  const items = (doc as { nftables?: unknown } | null)?.nftables
  if (!Array.isArray(items)) return null
  let table: unknown
  for (const item of items) {
    const chain = (item as { chain?: { name?: unknown; table?: unknown } } | null)?.chain
    if (chain?.name === 'forward') {
      table = chain.table
      break
    }
  }
  if (table === undefined) return null
  const found: ScopeChain[] = []
  for (const item of items) {
    const rule = (item as { rule?: { chain?: unknown; table?: unknown; expr?: unknown } } | null)?.rule
    if (rule?.chain !== 'forward' || rule.table !== table) continue
    collectTargets(rule.expr, found, 0)
  }
  return found
}

function collectTargets(node: unknown, found: ScopeChain[], depth: number): void {
  if (depth > MAX_DEPTH || node === null || typeof node !== 'object') return
  if (Array.isArray(node)) {
    for (const n of node) collectTargets(n, found, depth + 1)
    return
  }
  for (const [key, value] of Object.entries(node)) {
    if (key === 'jump' || key === 'goto') {
      const target = (value as { target?: unknown } | null)?.target
      if (typeof target === 'string' && CHAIN_NAMES.has(target) && !found.includes(target as ScopeChain)) found.push(target as ScopeChain)
      continue
    }
    collectTargets(value, found, depth + 1)
  }
}

/** match: only egressd's chain; mismatch: any other scope chain; unknown: no forward chain, or none named. */
export type RulesetScope = 'match' | 'mismatch' | 'unknown'

export function judgeRulesetScope(found: readonly ScopeChain[] | null, own: SetGroup): { verdict: RulesetScope; others: ScopeChain[] } {
  if (found === null || found.length === 0) return { verdict: 'unknown', others: [] }
  const others = found.filter((c) => c !== SCOPE_CHAINS[own])
  return { verdict: others.length === 0 ? 'match' : 'mismatch', others }
}

/** The gauge's value per verdict (egressd_firewall_ruleset_scope_match). */
export const RULESET_SCOPE_VALUE: Record<RulesetScope, number> = { match: 1, mismatch: 0, unknown: -1 }
