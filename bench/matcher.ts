/**
 * The policy matcher: lookups/s at 10, 1 k, 100 k and 1 M rules over text and wire
 * input, beside baselines measured in the same run (split + Set of suffixes, a RegExp
 * alternation up to 10 k rules, a linear endsWith scan up to 1 k rules); compile time,
 * heap per rule, bytes allocated per lookup. Every timed pass checks its count of
 * allowed verdicts against the count the corpus was built with.
 *
 * trie-wire is `verdictWire`, the DNS handler's per-query call (allow/deny and the rule
 * id from the trie's arrays); trie-rule-wire and trie-text read `action` through the
 * returned Rule object, as callers that explain a verdict do.
 *
 *   node --expose-gc build/bench/run.js matcher [--quick] [--ms=300]
 *   --quick: stop at 100 k rules (no 1 M compile)
 */
import os from 'node:os'
import { performance, PerformanceObserver } from 'node:perf_hooks'
import { compilePolicy } from '../src/policy/compile.js'
import type { Policy } from '../src/policy/match.js'
import { DEFAULT_PORTS, type PolicyEntry } from '../src/policy/types.js'
import { prng } from '../test/helpers/prng.js'

const WORDS = ['api', 'cdn', 'mqtt', 'ntp', 'time', 'update', 'registry', 'auth', 'telemetry', 'gw', 'edge', 'static', 'ota', 's3']
const REGIONS = ['eu', 'us', 'ap', 'west', 'east', 'north']
const TLDS = ['com', 'net', 'io', 'org', 'cloud']
const QUERIES = 8192

export interface Corpus {
  entries: PolicyEntry[]
  queries: string[]
  /** All queries' wire names back to back; `offsets[i]` is where query i starts. */
  wire: Buffer
  offsets: Int32Array
  /** Allowed verdicts per pass over the queries, by construction. */
  expected: number
}

export function corpus(n: number): Corpus {
  const rand = prng(n)
  const int = (k: number): number => Math.floor(rand() * k)
  const domains = Math.max(1, Math.floor(n / 20))
  const entries: PolicyEntry[] = []
  const kinds: number[] = []
  for (let i = 0; i < n; i++) {
    const d = `vendor${i % domains}.${TLDS[i % TLDS.length]}`
    const w = WORDS[i % WORDS.length]
    const k = i % 20
    let entry: string
    let action: 'allow' | 'deny' = 'allow'
    // Joined, not template literals: a cons string flattened during compile would hide
    // ~100 B/rule of the policy's own heap in the measurement.
    if (k < 12) entry = [w, '-', i, '.', REGIONS[i % REGIONS.length], '.', d].join('') // exact, 4 labels
    else if (k < 17) entry = ['*.', w, i, '.', d].join('') // wildcard
    else if (k < 19) {
      entry = [w, '-', i, '.', d].join('')
      action = 'deny'
    } else {
      entry = ['*.blocked', i, '.', d].join('')
      action = 'deny'
    }
    entries.push({ action, entry, ports: DEFAULT_PORTS, source: 'bench' })
    kinds.push(k)
  }
  const queries: string[] = []
  let expected = 0
  for (let q = 0; q < QUERIES; q++) {
    const i = int(n)
    const k = kinds[i]!
    const e = entries[i]!.entry
    const hit = q % 2 === 0
    let name: string
    if (hit && k < 12) name = e
    else if (hit) {
      // An allow hit: an exact rule, or 1–3 labels under a wildcard (deep subdomains).
      const j = pickAllow(kinds, i)
      const a = entries[j]!.entry
      name = kinds[j]! < 12 ? a : `${'x.y.z.'.slice(0, 2 * (1 + int(3)))}${a.slice(2)}`
    } else {
      switch (q % 8) {
        case 1: name = `miss${q}.nowhere${int(1000)}.org`; break
        case 3: name = k < 12 ? `${e.split('.')[0]}x.${e.slice(e.indexOf('.') + 1)}` : `m${q}.other${i}.net`; break
        case 5: name = k >= 12 && k < 17 ? e.slice(2) : `${WORDS[q % WORDS.length]}.vendor${i}.example`; break // a wildcard's apex
        default: name = k >= 17 ? (k === 19 ? `a.${e.slice(2)}` : e) : `deep.sub.miss${q}.io`; break // deny decides
      }
    }
    if (q % 16 === 0) name = name.toUpperCase()
    if (q % 32 === 3) name += '.'
    if (hit) expected++
    queries.push(name)
  }
  const parts: Buffer[] = []
  const offsets = new Int32Array(QUERIES)
  let at = 0
  for (let q = 0; q < QUERIES; q++) {
    const labels = queries[q]!.replace(/\.$/, '').split('.')
    const b = Buffer.alloc(labels.reduce((s, l) => s + 1 + l.length, 1))
    let p = 0
    for (const l of labels) {
      b[p++] = l.length
      p += b.write(l, p, 'latin1')
    }
    offsets[q] = at
    at += b.length
    parts.push(b)
  }
  return { entries, queries, wire: Buffer.concat(parts), offsets, expected }
}

function pickAllow(kinds: number[], i: number): number {
  for (let j = i; ; j = (j + 1) % kinds.length) if (kinds[j]! < 17) return j
}

/** The baseline most code would write: lowercase, split, a Set per rule kind, suffixes rebuilt. */
class SplitSet {
  private exactAllow = new Set<string>()
  private exactDeny = new Set<string>()
  private wildAllow = new Set<string>()
  private wildDeny = new Set<string>()
  constructor(entries: readonly PolicyEntry[]) {
    for (const e of entries) {
      const wild = e.entry.startsWith('*.')
      const name = (wild ? e.entry.slice(2) : e.entry).toLowerCase()
      ;(e.action === 'deny' ? (wild ? this.wildDeny : this.exactDeny) : wild ? this.wildAllow : this.exactAllow).add(name)
    }
  }
  allowed(name: string): boolean {
    name = name.toLowerCase()
    if (name.endsWith('.')) name = name.slice(0, -1)
    const labels = name.split('.')
    if (this.exactDeny.has(name)) return false
    let allow = this.exactAllow.has(name)
    let suffix = labels[labels.length - 1]!
    for (let k = labels.length - 2; k >= 0; k--) {
      if (this.wildDeny.has(suffix)) return false
      if (this.wildAllow.has(suffix)) allow = true
      suffix = labels[k] + '.' + suffix
    }
    return allow
  }
  /** Wire input: decode the labels to a string first, as a text-only matcher must. */
  allowedWire(buf: Buffer, offset: number): boolean {
    let name = ''
    for (let p = offset; buf[p] !== 0; p += 1 + buf[p]!) name += (name === '' ? '' : '.') + buf.toString('latin1', p + 1, p + 1 + buf[p]!)
    return this.allowed(name)
  }
}

class RegExpAlternation {
  private allow: RegExp
  private deny: RegExp
  constructor(entries: readonly PolicyEntry[]) {
    const build = (action: string): RegExp => {
      const exact: string[] = []
      const wild: string[] = []
      for (const e of entries) {
        if (e.action !== action) continue
        const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
        if (e.entry.startsWith('*.')) wild.push(esc(e.entry.slice(2)))
        else exact.push(esc(e.entry))
      }
      const alts = [...(exact.length ? [exact.join('|')] : []), ...(wild.length ? [`(?:[^.]+\\.)+(?:${wild.join('|')})`] : [])]
      return alts.length ? new RegExp(`^(?:${alts.join('|')})\\.?$`, 'i') : /$^/
    }
    this.allow = build('allow')
    this.deny = build('deny')
  }
  allowed(name: string): boolean {
    return !this.deny.test(name) && this.allow.test(name)
  }
}

class LinearEndsWith {
  private rules: { deny: boolean; wild: boolean; name: string; dotted: string }[]
  constructor(entries: readonly PolicyEntry[]) {
    this.rules = entries.map((e) => {
      const wild = e.entry.startsWith('*.')
      const name = wild ? e.entry.slice(2) : e.entry
      return { deny: e.action === 'deny', wild, name, dotted: '.' + name }
    })
  }
  allowed(name: string): boolean {
    name = name.toLowerCase()
    if (name.endsWith('.')) name = name.slice(0, -1)
    let allow = false
    for (const r of this.rules) {
      if (r.wild ? name.endsWith(r.dotted) : name === r.name) {
        if (r.deny) return false
        allow = true
      }
    }
    return allow
  }
}

interface Result {
  impl: string
  /** CPU time (user + system) per lookup: on a shared machine wall time mostly measures the neighbours. */
  nsPerOp: number
  wallNsPerOp: number
}

/** Runs whole passes over the corpus for at least `ms`; every pass checks its allowed count. */
function time(label: string, c: Corpus, ms: number, pass: () => number): Result {
  pass() // warm-up, also JIT
  let passes = 0
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  let t1 = t0
  do {
    const allowed = pass()
    if (allowed !== c.expected) throw new Error(`${label}: ${allowed} allowed in a pass, expected ${c.expected}`)
    passes++
    t1 = performance.now()
  } while (t1 - t0 < ms)
  const cpu = process.cpuUsage(c0)
  const ops = passes * QUERIES
  return { impl: label, nsPerOp: ((cpu.user + cpu.system) * 1e3) / ops, wallNsPerOp: ((t1 - t0) * 1e6) / ops }
}

/**
 * Heap bytes per lookup over a few thousand lookups after a full GC: few enough that an
 * allocating baseline does not trigger a scavenge (which would hide its garbage), after
 * a warm-up long enough that optimized code (which lives on the heap) already exists.
 */
function allocated(gc: () => void, lookup: (q: number) => unknown): number {
  const N = 4000
  for (let q = 0; q < 5 * QUERIES; q++) lookup(q % QUERIES)
  let best = Infinity
  for (let round = 0; round < 3; round++) {
    gc()
    const h0 = process.memoryUsage().heapUsed
    for (let q = 0; q < N; q++) lookup(q % QUERIES)
    const h1 = process.memoryUsage().heapUsed
    best = Math.min(best, Math.max(0, (h1 - h0) / N))
  }
  return best
}

/** ns per iteration of a trivial integer loop: ~0.3 ns on an idle 3 GHz core; scales every other figure. */
function calibrate(): number {
  const c0 = process.cpuUsage()
  let x = 0
  for (let i = 0; i < 1e8; i++) x = (x + i * 7) | 0
  const c = process.cpuUsage(c0)
  if (x === 42) console.log('')
  return ((c.user + c.system) * 1e3) / 1e8
}

export async function run(args: string[]): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with node --expose-gc')
  const quick = args.includes('--quick')
  const ms = Number(args.find((a) => a.startsWith('--ms='))?.slice(5) ?? 300)
  const sizes = quick ? [10, 1_000, 100_000] : [10, 1_000, 100_000, 1_000_000]
  const started = performance.now()
  let scavenges = 0
  const obs = new PerformanceObserver((list) => {
    scavenges += list.getEntries().length
  })
  const rows: string[][] = []
  const emit = (o: Record<string, unknown>): void => console.log(JSON.stringify({ bench: 'matcher', ...o }))
  const calibration = calibrate()
  emit({ case: 'machine', node: process.version, cpus: os.availableParallelism(), loadavg: os.loadavg().map(round), int_loop_ns: round(calibration * 100) / 100 })

  for (const n of sizes) {
    const c = corpus(n)
    gc()
    gc()
    const m0 = process.memoryUsage()
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    const policy: Policy = compilePolicy(c.entries)
    const compileMs = performance.now() - t0
    const cu = process.cpuUsage(c0)
    const compileCpuMs = (cu.user + cu.system) / 1e3
    gc()
    gc()
    const m1 = process.memoryUsage()
    const heapPerRule = (m1.heapUsed - m0.heapUsed) / policy.size
    const totalPerRule = (m1.heapUsed + m1.arrayBuffers - m0.heapUsed - m0.arrayBuffers) / policy.size
    emit({ case: 'compile', rules: policy.size, wall_ms: round(compileMs), cpu_ms: round(compileCpuMs), heap_bytes_per_rule: round(heapPerRule), heap_and_arraybuffer_bytes_per_rule: round(totalPerRule) })
    rows.push([String(n), 'compile', `${round(compileCpuMs)} ms`, `${round(heapPerRule)} B/rule heap, ${round(totalPerRule)} B/rule with typed arrays`, ''])

    const { queries, wire, offsets } = c
    const results: Result[] = []
    obs.observe({ entryTypes: ['gc'] })
    scavenges = 0
    results.push(time('trie-text', c, ms, () => {
      let a = 0
      for (let q = 0; q < QUERIES; q++) {
        const r = policy.match(queries[q]!)
        if (r !== null && r.action === 'allow') a++
      }
      return a
    }))
    // The DNS handler's path: the verdict from the trie, the Rule only when needed.
    results.push(time('trie-wire', c, ms, () => {
      let a = 0
      for (let q = 0; q < QUERIES; q++) if (policy.verdictWire(wire, offsets[q]!) > 0) a++
      return a
    }))
    // The same lookup read through the Rule object: two more random reads into the heap.
    results.push(time('trie-rule-wire', c, ms, () => {
      let a = 0
      for (let q = 0; q < QUERIES; q++) {
        const r = policy.matchWire(wire, offsets[q]!)
        if (r !== null && r.action === 'allow') a++
      }
      return a
    }))
    await new Promise((r) => setImmediate(r)) // let the observer deliver
    const trieGcs = scavenges
    const split = new SplitSet(c.entries)
    results.push(time('split-set-text', c, ms, () => {
      let a = 0
      for (let q = 0; q < QUERIES; q++) if (split.allowed(queries[q]!)) a++
      return a
    }))
    results.push(time('split-set-wire', c, ms, () => {
      let a = 0
      for (let q = 0; q < QUERIES; q++) if (split.allowedWire(wire, offsets[q]!)) a++
      return a
    }))
    if (n <= 10_000) {
      const re = new RegExpAlternation(c.entries)
      results.push(time('regexp-text', c, ms, () => {
        let a = 0
        for (let q = 0; q < QUERIES; q++) if (re.allowed(queries[q]!)) a++
        return a
      }))
    }
    if (n <= 1_000) {
      const lin = new LinearEndsWith(c.entries)
      results.push(time('endswith-text', c, ms, () => {
        let a = 0
        for (let q = 0; q < QUERIES; q++) if (lin.allowed(queries[q]!)) a++
        return a
      }))
    }
    obs.disconnect()
    const base = results.find((r) => r.impl === 'split-set-text')!.nsPerOp
    const baseWire = results.find((r) => r.impl === 'split-set-wire')!.nsPerOp
    const alloc: Record<string, number> = {
      'trie-text': allocated(gc, (q) => policy.match(queries[q]!)),
      'trie-wire': allocated(gc, (q) => policy.verdictWire(wire, offsets[q]!)),
      'trie-rule-wire': allocated(gc, (q) => policy.matchWire(wire, offsets[q]!)),
      'split-set-text': allocated(gc, (q) => split.allowed(queries[q]!)),
      'split-set-wire': allocated(gc, (q) => split.allowedWire(wire, offsets[q]!)),
    }
    for (const r of results) {
      const vsWire = r.impl.endsWith('-wire') ? { speedup_vs_split_set_wire: round(baseWire / r.nsPerOp) } : {}
      emit({
        case: 'lookup', rules: n, impl: r.impl, cpu_ns_per_op: round(r.nsPerOp), wall_ns_per_op: round(r.wallNsPerOp), lookups_per_cpu_s: Math.round(1e9 / r.nsPerOp),
        speedup_vs_split_set_text: round(base / r.nsPerOp), ...vsWire,
        bytes_allocated_per_lookup: alloc[r.impl] !== undefined ? round(alloc[r.impl]!) : undefined,
        allowed_per_pass: c.expected, queries_per_pass: QUERIES,
        ...(r.impl === 'trie-wire' ? { gc_events_during_trie_runs: trieGcs } : {}),
      })
      rows.push([
        String(n), r.impl, `${round(r.nsPerOp)} ns`, `${(1e9 / r.nsPerOp / 1e6).toFixed(2)} M/s (wall ${round(r.wallNsPerOp)} ns)`,
        `${round(base / r.nsPerOp)}×` + (r.impl.endsWith('-wire') ? ` (wire ${round(baseWire / r.nsPerOp)}×)` : '') +
          (alloc[r.impl] !== undefined ? `, ${round(alloc[r.impl]!)} B/op` : ''),
      ])
    }
    if (performance.now() - started > 100_000) {
      console.log('# stopping early: over 100 s')
      break
    }
  }
  console.log('')
  console.log(`# ${new Date().toISOString()} node ${process.version}, ${os.availableParallelism()} CPUs, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}; ns/op and rates are CPU time; integer loop ${calibration.toFixed(2)} ns/iteration (~0.3 on an idle core)`)
  console.log(table(['rules', 'impl', 'ns/op', 'rate', 'vs split+Set text, alloc']))
  for (const r of rows) console.log(table(r))
}

function round(x: number): number {
  return Math.round(x * 10) / 10
}

function table(cells: string[]): string {
  const widths = [9, 16, 12, 48, 30]
  return cells.map((c, i) => c.padEnd(widths[i] ?? 10)).join(' ')
}

if (import.meta.url === `file://${process.argv[1]}`) await run(process.argv.slice(2))
