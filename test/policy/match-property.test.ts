/**
 * Seeded random invariant: the compiled trie agrees with the naive reference on the
 * deciding rule and on hasAllowedBelow, over text and wire input, for random policies
 * (exact, wildcard, deny, overlapping) and random plus adversarial names.
 * Replay a failure with EGRESSD_SEED=<seed printed on failure>.
 */
import t from 'tap'
import { compilePolicy } from '../../src/policy/compile.js'
import type { Policy } from '../../src/policy/match.js'
import { DEFAULT_PORTS, type PolicyEntry } from '../../src/policy/types.js'
import { ReferenceMatcher, labelsToWire } from './reference-matcher.js'
import { prng } from '../helpers/prng.js'

const seed = process.env.EGRESSD_SEED !== undefined ? Number(process.env.EGRESSD_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0
const POLICIES = 300
const NAMES_PER_POLICY = 120

const rand = prng(seed)
const int = (n: number): number => Math.floor(rand() * n)
const pick = <T>(a: readonly T[]): T => a[int(a.length)]!
const chance = (p: number): boolean => rand() < p

const TLDS = ['com', 'net', 'org']
const VOCAB = ['example', 'badexample', 'evil', 'a', 'b', 'www', 'api', 'x-y', '_srv', 'deep', '-', '0', 'a'.repeat(63)]
const BAD = [' ', '\0', 'ü', '*', '/', '\x7f', 'A.', '\u212a']

function randomPolicy(): PolicyEntry[] {
  const out: PolicyEntry[] = []
  const n = 1 + int(25)
  for (let i = 0; i < n; i++) {
    const labels = [pick(TLDS)]
    const depth = int(4)
    for (let d = 0; d < depth; d++) labels.unshift(pick(VOCAB))
    if (labels.length === 1 && chance(0.7)) labels.unshift(pick(VOCAB))
    const wildcard = chance(0.4)
    out.push({
      action: chance(0.3) ? 'deny' : 'allow',
      entry: (wildcard ? '*.' : '') + labels.join('.') + (chance(0.1) ? '.' : ''),
      ports: DEFAULT_PORTS,
      source: `random:${i}`,
    })
  }
  return out
}

function ruleLabels(e: PolicyEntry): string[] {
  const text = e.entry.endsWith('.') ? e.entry.slice(0, -1) : e.entry
  return (text.startsWith('*.') ? text.slice(2) : text).split('.')
}

function randomCase(s: string): string {
  let out = ''
  for (const c of s) out += chance(0.3) ? c.toUpperCase() : c
  return out
}

/** Labels of a query name; a label may hold a dot (one wire label, two text labels). */
function randomName(entries: readonly PolicyEntry[]): string[] {
  const base = ruleLabels(pick(entries))
  let labels: string[]
  switch (int(7)) {
    case 0: labels = base; break // the rule's own name: exact hits, apexes of wildcards
    case 1: labels = [...Array.from({ length: 1 + int(3) }, () => pick(VOCAB)), ...base]; break // below it
    case 2: labels = base.slice(1 + int(Math.max(1, base.length - 1))); break // above it
    case 3: labels = [...base, 'evil', 'net']; break // example.com.evil.net
    case 4: labels = ['bad' + base[0]!, ...base.slice(1)]; break // badexample.com vs example.com
    case 5: labels = [...Array.from({ length: 1 + int(4) }, () => pick(VOCAB)), pick(TLDS)]; break
    default: {
      // Near the 253/254-byte limit, under a rule's name.
      labels = [...base]
      const target = 249 + int(8)
      while (labels.join('.').length < target) {
        const room = target - labels.join('.').length - 1
        labels.unshift('y'.repeat(Math.max(1, Math.min(63, room))))
      }
    }
  }
  if (labels.length === 0) labels = [pick(TLDS)]
  if (chance(0.3)) labels = labels.map(randomCase)
  if (chance(0.08)) {
    const k = int(labels.length)
    const l = labels[k]!
    const at = int(l.length + 1)
    labels[k] = l.slice(0, at) + pick(BAD) + l.slice(at)
  }
  if (chance(0.04) && labels.length >= 2) {
    // Two labels as one: a dot inside a wire label.
    const k = int(labels.length - 1)
    labels.splice(k, 2, `${labels[k]}.${labels[k + 1]}`)
  }
  if (chance(0.03)) labels[int(labels.length)] = 'z'.repeat(64)
  return labels
}

t.test(`compiled matcher agrees with the reference (seed ${seed})`, async (t) => {
  const mix = { exact: 0, wildcard: 0, deny: 0, miss: 0, below: 0, wireOnly: 0, checked: 0 }
  let failure: string | null = null
  outer: for (let p = 0; p < POLICIES; p++) {
    const entries = randomPolicy()
    const policy = compilePolicy(entries)
    const ref = new ReferenceMatcher(entries)
    for (let q = 0; q < NAMES_PER_POLICY; q++) {
      const labels = randomName(entries)
      const text = labels.join('.') + (chance(0.15) ? '.' : '') + (chance(0.01) ? '.' : '')
      const wire = labelsToWire(labels.map((l) => Buffer.from(l, 'utf8')))
      const got = {
        text: policy.match(text)?.id ?? -1,
        wire: policy.matchWire(wire, 0)?.id ?? -1,
        verdictWire: policy.verdictWire(wire, 0),
        below: policy.hasAllowedBelow(text),
        belowWire: policy.hasAllowedBelowWire(wire, 0),
      }
      const want = {
        text: ref.match(text),
        wire: ref.matchWire(wire, 0),
        verdictWire: verdictOf(policy, ref.matchWire(wire, 0)),
        below: ref.hasAllowedBelow(text),
        belowWire: ref.hasAllowedBelowWire(wire, 0),
      }
      mix.checked++
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        failure = [
          `EGRESSD_SEED=${seed} policy #${p} name #${q}`,
          `entries: ${JSON.stringify(entries.map((e) => `${e.action} ${e.entry}`))}`,
          `name: ${JSON.stringify(text)} wire labels: ${JSON.stringify(labels)}`,
          `compiled: ${JSON.stringify(got)}`,
          `reference: ${JSON.stringify(want)}`,
        ].join('\n')
        break outer
      }
      const rule = got.text >= 0 ? policy.rules[got.text]! : null
      if (rule === null) mix.miss++
      else if (rule.action === 'deny') mix.deny++
      else if (rule.wildcard) mix.wildcard++
      else mix.exact++
      if (got.below) mix.below++
      if (got.wire !== got.text) mix.wireOnly++
    }
  }
  if (failure !== null) t.fail(`first counterexample:\n${failure}`)
  t.comment(`seed ${seed}: ${JSON.stringify(mix)}`)
  t.equal(mix.checked, POLICIES * NAMES_PER_POLICY, 'every case checked')
  // The case mix was really exercised, not just misses.
  for (const k of ['exact', 'wildcard', 'deny', 'miss', 'below', 'wireOnly'] as const) {
    t.ok(mix[k] > POLICIES, `${k}: ${mix[k]} cases (seed ${seed})`)
  }
})

t.test(`a policy that outgrows the builder's first arrays (seed ${seed})`, async (t) => {
  // Few entries, many names: the node, label and rule arrays grow and the table rehashes.
  const entries: PolicyEntry[] = [
    { action: 'allow', entry: '{0..9999}.h.example.com', ports: DEFAULT_PORTS, source: 'g:1' },
    { action: 'allow', entry: '*.{0..9999}.w.example.com', ports: DEFAULT_PORTS, source: 'g:2' },
    { action: 'deny', entry: '{0..4999}.h.example.com', ports: DEFAULT_PORTS, source: 'g:3' },
    { action: 'allow', entry: `{0..9999}.${'l'.repeat(60)}.example.net`, ports: DEFAULT_PORTS, source: 'g:4' },
  ]
  const policy = compilePolicy(entries)
  const ref = new ReferenceMatcher(entries)
  t.equal(policy.size, 35_000)
  let mismatches = 0
  let allowed = 0
  let first = ''
  for (let q = 0; q < 20_000; q++) {
    const n = int(10_500)
    const name = pick([`${n}.h.example.com`, `x.${n}.w.example.com`, `${n}.w.example.com`, `${n}.${'l'.repeat(60)}.example.net`])
    const got = policy.match(name)?.id ?? -1
    const want = ref.match(name)
    const wire = labelsToWire(name.split('.').map((l) => Buffer.from(l)))
    const gotWire = policy.matchWire(wire, 0)?.id ?? -1
    // The reference's hasAllowedBelow scans every rule: sampled.
    const belowDiffers = q % 50 === 0 && policy.hasAllowedBelow(name) !== ref.hasAllowedBelow(name)
    if (got !== want || gotWire !== want || belowDiffers) {
      if (mismatches++ === 0) first = `${name}: compiled ${got}/${gotWire}, reference ${want}`
    }
    if (got >= 0 && policy.rules[got]!.action === 'allow') allowed++
  }
  t.equal(mismatches, 0, first)
  t.ok(allowed > 5_000, `${allowed} allowed`)
  t.equal(policy.match('7.h.example.com')!.pattern, '7.h.example.com')
  t.equal(policy.match('7.h.example.com')!.action, 'deny')
  t.equal(policy.match('a.b.9999.w.example.com')!.pattern, '*.9999.w.example.com')
})

/** The verdictWire encoding of a reference answer (a rule id or -1). */
function verdictOf(policy: Policy, id: number): number {
  return id < 0 ? 0 : policy.rules[id]!.action === 'allow' ? id + 1 : -(id + 1)
}
