/**
 * The proposal as YAML an operator pastes: the default group's names as a top-level
 * `allow:`, every other group as a `groups:` item with its name and `allow:`. Comments
 * carry the evidence (names, hits, first and last seen). Deterministic: the same log
 * gives the same bytes. Pure.
 */
import type { GroupSet } from '../policy/groups.js'
import { collapse, type Proposal } from './collapse.js'
import { MAX_NAMES, type Observations } from './observe.js'

export interface RenderOptions {
  threshold: number
  /** Where the lines came from, for the header. */
  input: string
  /** With `-c FILE`: names this configuration's group already allows are left out. */
  config?: { file: string; groups: GroupSet }
}

const EXAMPLES = 3

export function render(obs: Observations, opts: RenderOptions): string {
  const out: string[] = [
    `# egressd suggest: an allowlist proposed from ${opts.input}`,
    `# ${obs.lines} lines read, ${obs.used} DNS/SNI decisions used (verdict blocked, would_block or allowed)`,
    `# wildcards only where at least ${opts.threshold} names shared a parent at or below a registrable domain (--threshold)`,
  ]
  if (obs.denied > 0) out.push(`# ${obs.denied} decisions by a deny rule are left out: a deny is a decision already taken`)
  if (obs.dropped > 0) out.push(`# ${obs.dropped} decisions about further names were not kept: at most ${MAX_NAMES} distinct names are tallied`)
  const cfg = opts.config
  const order = groupOrder([...obs.groups.keys()], cfg?.groups)
  const sections: { group: string; proposals: Proposal[]; left: number; unknown: boolean }[] = []
  for (const group of order) {
    const names = obs.groups.get(group)!
    const compiled = cfg?.groups.byName(group)
    let left = 0
    let kept = names
    if (compiled !== undefined) {
      kept = new Map()
      for (const [name, o] of names) {
        const rule = compiled.policy.match(name)
        if (rule !== null && rule.action === 'allow') left++
        else kept.set(name, o)
      }
    }
    sections.push({ group, proposals: collapse(kept, opts.threshold), left, unknown: cfg !== undefined && compiled === undefined })
  }
  if (cfg !== undefined) {
    const left = sections.reduce((n, s) => n + s.left, 0)
    out.push(`# names already allowed by ${cfg.file} for their group are left out (${left})`)
  }
  out.push('# review before pasting: every name below was seen on the wire; none has been vetted')
  if (sections.every((s) => s.proposals.length === 0)) {
    out.push('# nothing to propose')
    return out.join('\n') + '\n'
  }

  const def = sections.find((s) => s.group === 'default')
  if (def !== undefined && def.proposals.length > 0) {
    out.push('', '# group default: the top-level allow list')
    out.push('allow:')
    for (const p of def.proposals) out.push(`  - ${entry(p)}`)
  }
  const named = sections.filter((s) => s.group !== 'default' && s.proposals.length > 0)
  if (named.length > 0) {
    out.push('', 'groups:')
    for (const s of named) {
      out.push(`  - name: ${s.group}`)
      out.push(s.unknown ? `    # not a group of ${cfg!.file}: add clients, presets and mode before using it` : `    # merge into the allow list of group "${s.group}"`)
      out.push('    allow:')
      for (const p of s.proposals) out.push(`      - ${entry(p)}`)
    }
  }
  return out.join('\n') + '\n'
}

function entry(p: Proposal): string {
  const seen = `${p.count} ${p.count === 1 ? 'hit' : 'hits'} (${[p.dns ? `dns ${p.dns}` : '', p.sni ? `sni ${p.sni}` : ''].filter(Boolean).join(', ')})`
  const when = p.first === '' ? '' : p.first === p.last ? `, seen ${p.first}` : `, first ${p.first}, last ${p.last}`
  if (!p.wildcard) return `${JSON.stringify(p.pattern)}  # ${seen}${when}`
  const suffix = p.pattern.length - 1
  const shown = p.names.slice(0, EXAMPLES).map((n) => n.slice(0, n.length - suffix) || n)
  const more = p.names.length > EXAMPLES ? ', …' : ''
  return `${JSON.stringify(p.pattern)}  # ${p.names.length} names (${shown.join(', ')}${more}), ${seen}${when}`
}

/** `default` first, then the configuration's groups in its order, then the rest alphabetically. */
function groupOrder(seen: string[], groups: GroupSet | undefined): string[] {
  const rank = new Map<string, number>()
  groups?.groups.forEach((g, i) => rank.set(g.name, i))
  return seen.sort((a, b) => {
    if (a === 'default' || b === 'default') return a === 'default' ? (b === 'default' ? 0 : -1) : 1
    const ra = rank.get(a) ?? Infinity
    const rb = rank.get(b) ?? Infinity
    return ra !== rb ? ra - rb : a < b ? -1 : a > b ? 1 : 0
  })
}
