/**
 * allow/deny/report/rebind_exempt items, in the configuration, a preset or an included
 * file: `"name"` or `{name: "…", ports: [123/udp], public_suffix: true}`. Patterns are
 * checked here so errors carry the entry's `file:line:col`.
 */
import { isMap, isScalar, Scalar, type Node } from 'yaml'
import { expandPattern, MAX_EXPANSION, PatternError, patternSize, type ExpandedPattern } from '../policy/pattern.js'
import { describeHit, wildcardOverPublicSuffix, type PublicSuffixHit } from '../policy/public-suffix.js'
import { DEFAULT_PORTS, type Action, type PolicyEntry, type PortSpec } from '../policy/types.js'
import { readPorts } from './fields.js'
import { entrySchema } from './schema.js'
import { describe, quote, type YamlReader } from './yaml-reader.js'

/**
 * What all entries of a configuration may expand to together, counting each name a
 * brace product yields and each group's use of a preset (every group compiles its own
 * matcher). 1 M plain allow entries load; a small file of brace products that would
 * expand to millions of names is refused before they are expanded (measured: 300
 * entries of `{0..99}{0..99}.…`, an 11 KB file, took 24 s and 600 MB to accept as 3 M
 * rules). Documented in docs/configuration.md.
 */
export const MAX_CONFIG_NAMES = 1 << 20

export class NameBudget {
  #used = 0
  private exceeded = false
  constructor(readonly max: number) {}

  /** Names counted so far. */
  get used(): number {
    return this.#used
  }

  /** Counts `n` more names; false once the total is past `max` (reported at the first entry past it, once). */
  charge(n: number, r: YamlReader, node: Node | null | undefined, what: string): boolean {
    if (this.exceeded) return false
    if (this.#used + n <= this.max) {
      this.#used += n
      return true
    }
    this.exceeded = true
    r.error(node, `${what} brings the configuration to more than ${this.max} names (${this.#used} before it, ${n} from it;` +
      ' each brace expansion counts its names, each group its own); later entries were not expanded')
    return false
  }
}

export interface EntryContext {
  /** `preset NAME`: sources then read `preset NAME (file:line:col)`. */
  readonly origin?: string
  /** Charged before each entry is expanded; presets are charged per use by the loader instead. */
  readonly budget?: NameBudget
  /** `file:line:col: warning: …` lines for `validate`. */
  readonly warnings: string[]
}

const KEYS = Object.keys(entrySchema)

export function readEntries(r: YamlReader, node: Node | null | undefined, path: string, action: Action, ctx: EntryContext): PolicyEntry[] {
  const out: PolicyEntry[] = []
  for (const item of r.list(node, path)) {
    let nameNode: Node | null | undefined = item
    let ports: readonly PortSpec[] = DEFAULT_PORTS
    let suffixNode: Node | null | undefined
    let publicSuffix = false
    if (isMap(item)) {
      const keys = r.map(item, `${path}[]`, KEYS)
      nameNode = keys.get('name')
      if (nameNode === undefined) r.error(item, `${path} entry needs a name, e.g. {name: "*.example.com", ports: [443/tcp]}`)
      if (keys.has('ports')) ports = readPorts(r, keys.get('ports'), `${path}[].ports`)
      if (keys.has('public_suffix')) {
        suffixNode = keys.get('public_suffix')
        publicSuffix = r.bool(suffixNode, `${path}[].public_suffix`, entrySchema.public_suffix.default)
      }
    }
    if (nameNode === undefined) continue
    const text = isScalar(nameNode) && (typeof nameNode.value === 'string' || typeof nameNode.value === 'number') ? String(nameNode.value) : null
    if (text === null) {
      r.error(nameNode, `${path} entries are names or {name, ports} mappings, not ${describe(nameNode)}`)
      continue
    }
    let expanded: ExpandedPattern
    try {
      // Counted before expanding: an entry past the budget is never expanded. One past
      // MAX_EXPANSION goes on to expandPattern, which refuses it before expanding too.
      const size = patternSize(text)
      if (ctx.budget !== undefined && size <= MAX_EXPANSION && !ctx.budget.charge(size, r, nameNode, `${path}: ${quote(text)}`)) continue
      expanded = expandPattern(text)
    } catch (e) {
      if (!(e instanceof PatternError)) throw e
      const quoted = (nameNode as Scalar).type === Scalar.QUOTE_DOUBLE || (nameNode as Scalar).type === Scalar.QUOTE_SINGLE
      r.error(nameNode, `${path}: ${quote(text)}: ${e.message}${e.hint ? ` (${e.hint})` : ''}`, e.offset + (quoted ? 1 : 0))
      continue
    }
    const hit = expanded.wildcard ? firstHit(expanded) : null
    if (action === 'allow' && hit !== null && !publicSuffix) {
      r.error(nameNode, `${path}: ${quote(text)} allows every name under ${describeHit(hit.hit)}; name a domain below it` +
        ` (e.g. "*.example.${hit.hit.below ? hit.name : hit.hit.suffix}"), or write {name: ${JSON.stringify(text)}, public_suffix: true} if every name under it is meant`)
      continue
    }
    if (suffixNode !== undefined && publicSuffix) {
      const why = action === 'deny' ? 'has no effect in deny (a deny wildcard over a public suffix needs no marking)'
        : hit === null ? `is not needed: ${quote(text)} stays within one registrable domain` : null
      if (why !== null) ctx.warnings.push(`${r.where(suffixNode)}: warning: ${path}[].public_suffix ${why}`)
    }
    const where = r.where(nameNode)
    out.push({ action, entry: text, ports, source: ctx.origin ? `${ctx.origin} (${where})` : where })
  }
  return out
}

/** The first expanded wildcard base that is at or above a public suffix. */
function firstHit(x: ExpandedPattern): { name: string; hit: PublicSuffixHit } | null {
  for (const name of x.names) {
    const hit = wildcardOverPublicSuffix(name)
    if (hit !== null) return { name, hit }
  }
  return null
}
