import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { getDomain } from 'tldts'
import { parse } from 'yaml'
import { collapse, collapsible } from '../../src/suggest/collapse.js'
import { hostName, Observations, type Observation } from '../../src/suggest/observe.js'
import { CLI } from '../helpers/daemon.js'

const FIXTURES = join(process.cwd(), 'test', 'suggest', 'fixtures')
const LOG = join(FIXTURES, 'egressd.log')
const dir = mkdtempSync(join(tmpdir(), 'egressd-suggest-'))

function egressd(args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d) => (stdout += d))
    p.stderr.on('data', (d) => (stderr += d))
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))
    p.stdin.end(stdin ?? '')
  })
}

t.test('suggest on a recorded log: the expected YAML, byte for byte', async (t) => {
  const r = await egressd(['suggest', LOG])
  t.equal(r.code, 0, r.stderr)
  const expected = readFileSync(join(FIXTURES, 'egressd.expected.yaml'), 'utf8').replace('LOGFILE', LOG)
  t.equal(r.stdout, expected)
  const doc = parse(r.stdout) as { allow: string[]; groups: { name: string; allow: string[] }[] }
  const all = [...doc.allow, ...doc.groups.flatMap((g) => g.allow)]
  for (const bad of ['*.com', '*.co.uk', '*.github.io', '*.example', '*.in-addr.arpa']) t.notOk(all.includes(bad), `never ${bad}`)
  t.ok(doc.groups.find((g) => g.name === 'onboarding')!.allow.includes('*.eu.newvendor.example'), 'five siblings collapse')
  t.ok(doc.groups.find((g) => g.name === 'onboarding')!.allow.includes('one.small.example'), 'four do not')
  t.notOk(all.includes('registry-1.docker.io'), 'a name a deny rule blocked is not proposed')
  t.notOk(all.includes('10.1.2.3'), 'IP literals are not names')
})

t.test('the same log on stdin, with a lower threshold and a configuration', async (t) => {
  const config = join(dir, 'c.yaml')
  writeFileSync(config, [
    'groups:',
    '  - name: onboarding',
    '    clients: [192.168.30.0/24]',
    '    mode: report',
    '    allow: ["time{1..4}.google.com"]',
    '  - name: balena',
    '    clients: [192.168.20.0/24]',
    '    presets: [dt-cloud-connector-wildcards]',
    '',
  ].join('\n'))
  const r = await egressd(['suggest', '-c', config, '--threshold', '4', '-'], readFileSync(LOG, 'utf8'))
  t.equal(r.code, 0, r.stderr)
  const doc = parse(r.stdout) as { allow: string[]; groups: { name: string; allow: string[] }[] }
  t.same(doc.groups.map((g) => g.name), ['onboarding', 'balena'], 'the configuration\'s group order')
  const onboarding = doc.groups[0]!.allow
  t.ok(onboarding.includes('*.small.example'), 'threshold 4: four siblings collapse')
  t.notOk(onboarding.includes('time1.google.com'), 'already allowed by the group: left out')
  t.notOk(doc.groups[1]!.allow.includes('api.balena-cloud.com'), 'allowed by the balena preset: left out')
  t.match(r.stdout, /# names already allowed by .*c\.yaml for their group are left out \(2\)/)
  t.match(r.stdout, /from stdin/)
})

t.test('suggest: usage errors and empty input', async (t) => {
  t.equal((await egressd(['suggest', '--threshold', '1', LOG])).code, 2)
  t.equal((await egressd(['suggest', join(dir, 'missing.log')])).code, 2)
  const empty = await egressd(['suggest'], 'not json\n{"msg":"ready"}\n')
  t.equal(empty.code, 0)
  t.match(empty.stdout, /# nothing to propose/)
  t.equal(parse(empty.stdout), null, 'still a YAML document')
})

t.test('hostName: what can be an allow entry', async (t) => {
  t.equal(hostName('API.Example.COM.'), 'api.example.com')
  t.equal(hostName('_dmarc.example.com'), '_dmarc.example.com')
  for (const bad of ['', '.', '10.1.2.3', 'a..b', 'a b.example', 'bücher.example', 'x'.repeat(64) + '.example', '\\000.example']) t.equal(hostName(bad), null, bad)
})

t.test('Observations: tallies per group, first/last, non-decisions skipped', async (t) => {
  const o = new Observations()
  o.add('{"protocol":"dns","verdict":"blocked","name":"a.example","time":"2025-01-02T00:00:00.000Z"}')
  o.add('{"protocol":"dns","verdict":"blocked","name":"a.example","time":"2025-01-01T00:00:00.000Z","group":"g"}')
  o.add('{"protocol":"sni","verdict":"would_block","name":"a.example","time":"2025-01-03T00:00:00.000Z","group":"g"}')
  o.add('{"protocol":"sni","verdict":"upstream_error","name":"b.example","group":"g"}')
  o.add('{"protocol":"dns","verdict":"blocked","name":"c.example","group":"BAD GROUP","time":1735689600000}')
  o.add('[1,2]')
  o.add('null')
  t.same(o.groups.get('g')!.get('a.example'), { count: 2, dns: 1, sni: 1, first: '2025-01-01T00:00:00.000Z', last: '2025-01-03T00:00:00.000Z' })
  t.equal(o.groups.get('default')!.get('c.example')!.first, '2025-01-01T00:00:00.000Z', 'epoch ms times become ISO')
  t.equal(o.used, 4)
  t.equal(o.lines, 7)
})

t.test('collapsible: never at or above a public suffix', async (t) => {
  for (const p of ['com', 'co.uk', 'github.io', 'example', 'in-addr.arpa', 's3.amazonaws.com']) t.notOk(collapsible(p), p)
  for (const p of ['example.com', 'eu.example.com', 'example.co.uk', 'alice.github.io', 'newvendor.example', 'pool.ntp.org']) t.ok(collapsible(p), p)
})

t.test('collapse: seeded invariants over names under public suffixes', async (t) => {
  const seed = Number(process.env.SUGGEST_SEED ?? 20250301)
  t.comment(`seed ${seed}`)
  let s = seed
  const rnd = (n: number) => ((s = (s * 1103515245 + 12345) % 2 ** 31), s % n)
  const suffixes = ['com', 'co.uk', 'github.io', 'org', 'example', 'net']
  const words = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'api', 'eu', 'us', 'iot', 'cdn']
  let wildcards = 0
  let exact = 0
  for (let round = 0; round < 200; round++) {
    const observed = new Map<string, Observation>()
    for (let k = 3 + rnd(40); k > 0; k--) {
      const depth = 1 + rnd(3)
      const labels = Array.from({ length: depth }, () => words[rnd(words.length)]!)
      observed.set([...labels, suffixes[rnd(suffixes.length)]].join('.'), { count: 1, dns: 1, sni: 0, first: '', last: '' })
    }
    const threshold = 2 + rnd(4)
    const out = collapse(observed, threshold)
    for (const p of out) {
      if (p.wildcard) {
        wildcards++
        const base = p.pattern.slice(2)
        const domain = getDomain(base, { allowPrivateDomains: true })
        if (domain === null || !(base === domain || base.endsWith('.' + domain))) t.fail(`seed ${seed} round ${round}: ${p.pattern} is at or above a public suffix`)
        if (p.names.length < threshold) t.fail(`seed ${seed} round ${round}: ${p.pattern} from ${p.names.length} names < ${threshold}`)
      } else exact++
    }
    // Every observed name is covered by exactly one proposal, and nothing else is proposed.
    const names = out.flatMap((p) => p.names)
    t.equal(names.length, observed.size, `round ${round}: every name once`)
    for (const p of out) {
      for (const n of p.names) {
        const ok = p.wildcard ? n.endsWith(p.pattern.slice(1)) : n === p.pattern
        if (!ok) t.fail(`seed ${seed} round ${round}: ${p.pattern} does not cover ${n}`)
      }
    }
  }
  t.ok(wildcards > 50 && exact > 500, `both kinds proposed (${wildcards} wildcards, ${exact} exact)`)
})

t.test('collapse: wildcards one level down count as siblings of their parent', async (t) => {
  const ob = (): Observation => ({ count: 1, dns: 1, sni: 0, first: '', last: '' })
  const observed = new Map<string, Observation>()
  for (const region of ['eu', 'us', 'ap']) for (const host of ['a', 'b', 'c']) observed.set(`${host}.${region}.vendor.com`, ob())
  observed.set('vendor.com', ob())
  t.same(collapse(observed, 3).map((p) => p.pattern), ['vendor.com', '*.vendor.com'])
  t.same(collapse(observed, 4).map((p) => p.pattern).length, 10, 'threshold 4: nothing collapses')
})
