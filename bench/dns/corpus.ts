/**
 * Rule sets and query files for the DNS benchmark. One rule set is rendered twice, as an
 * egressd allow list and as dnsmasq `server=` lines, so both servers decide the same
 * queries the same way. Deterministic apart from the run tag that keeps cache-miss names
 * unseen.
 */
import { createWriteStream } from 'node:fs'

/** Every cache-miss name lives under this wildcard. */
export const MISS_ZONE = 'bench.example'

export interface Rule {
  /** As written in egressd's allow list: `host.example.com` or `*.example.com`. */
  pattern: string
  wildcard: boolean
  /** The domain without `*.`. */
  domain: string
}

/**
 * `count` rules: `*.bench.example` first, then exact names and wildcards alternately,
 * shaped like vendor firewall guides (service host names, CDN wildcards) over a few
 * hundred vendor domains.
 */
export function makeRules(count: number): Rule[] {
  const rules: Rule[] = [{ pattern: `*.${MISS_ZONE}`, wildcard: true, domain: MISS_ZONE }]
  for (let i = 1; i < count; i++) {
    if (i % 2 === 0) {
      const domain = `api${i}.region${i % 7}.vendor${i % 211}.com`
      rules.push({ pattern: domain, wildcard: false, domain })
    } else {
      const domain = `cdn${i}.vendor${i % 211}.net`
      rules.push({ pattern: `*.${domain}`, wildcard: true, domain })
    }
  }
  return rules
}

/** Allowed names that never fall under MISS_ZONE: the cache-hit set, spread over all rules. */
export function allowedNames(rules: readonly Rule[], count: number): string[] {
  const pool = rules.slice(1)
  const names: string[] = []
  if (pool.length === 0) return names
  for (let k = 0; names.length < count; k++) {
    const r = pool[k % pool.length]!
    // An exact rule contributes its one name; repeats are skipped so the set stays distinct.
    if (!r.wildcard) {
      if (k < pool.length) names.push(r.domain)
      else if (pool.every((p) => !p.wildcard)) break
      continue
    }
    names.push(`d${Math.floor(k / pool.length)}.${r.domain}`)
  }
  return names
}

/** Names under no rule and above none (no NODATA case): each is answered NXDOMAIN. */
export function blockedNames(count: number): string[] {
  const names: string[] = []
  for (let i = 0; i < count; i++) names.push(`t${i}.ads${i % 97}.tracker${i % 13}.org`)
  return names
}

/** Writes `names` as a dnsperf data file (`name A` per line). */
export function writeQueryFile(path: string, names: readonly string[]): Promise<void> {
  return writeLines(path, names.length, (i) => `${names[i]} A\n`)
}

/** Writes `count` distinct names under MISS_ZONE, tagged so no earlier run has seen them. */
export function writeMissFile(path: string, count: number, tag: string): Promise<void> {
  return writeLines(path, count, (i) => `m${i}-${tag}.x${i % 1000}.${MISS_ZONE} A\n`)
}

function writeLines(path: string, count: number, line: (i: number) => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(path)
    out.once('error', reject)
    let i = 0
    const pump = (): void => {
      while (i < count) {
        // Batch lines so a million-line file takes one second, not thirty.
        let chunk = ''
        const end = Math.min(count, i + 4096)
        for (; i < end; i++) chunk += line(i)
        if (!out.write(chunk)) {
          out.once('drain', pump)
          return
        }
      }
      out.end(resolve)
    }
    pump()
  })
}

export function egressdAllowYaml(rules: readonly Rule[]): string {
  return rules.map((r) => `  - "${r.pattern}"\n`).join('')
}

/**
 * dnsmasq's idiom for allow-only: `address=/#/` (no address) answers NXDOMAIN for every
 * name not claimed by a more specific `server=`; `server=/*.d/` forwards names strictly
 * below `d` (like egressd's `*.d`), `server=/d/` forwards `d` and everything below it
 * (wider than egressd's exact rule, which no query in this benchmark distinguishes).
 */
export function dnsmasqServerLines(rules: readonly Rule[], upstream: string): string {
  return rules.map((r) => `server=/${r.wildcard ? '*.' : ''}${r.domain}/${upstream}\n`).join('')
}
