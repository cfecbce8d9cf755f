// The one decision (src/policy/decide.ts): DNS wire names and text names get the same
// verdict, group, rule and block answer, for deny entries under allow wildcards, deny
// wildcards under allow wildcards, report mode and groups.
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseConfig } from '../../src/config/load.js'
import { compileConfig } from '../../src/daemon/compiled-config.js'
import { Decision, type Decider } from '../../src/policy/decide.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-decide-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')

function decider(yaml: string): Decider {
  return compileConfig(parseConfig('d.yaml', yaml, { resolvConf }).config).decider
}

function toWire(name: string): Uint8Array {
  const out: number[] = new Array(12).fill(0)
  for (const label of name.split('.').filter((l) => l !== '')) out.push(label.length, ...Buffer.from(label))
  out.push(0, 0, 1, 0, 1)
  return Uint8Array.from(out)
}

interface Seen {
  verdict: string
  group: string
  rule: string | null
  passedBy: string | null
  reason: string | null
  answer: string | null
}

function see(d: Decision): Seen {
  return {
    verdict: d.verdictName,
    group: d.group.name,
    rule: d.rule === null ? null : `${d.rule.action} ${d.rule.pattern}`,
    passedBy: d.passedBy === null ? null : d.passedBy.pattern,
    reason: d.reason,
    answer: d.verdictName === 'blocked' ? d.answer : null,
  }
}

/** Decides by text and by wire and checks both agree; returns what they said. */
function decide(t: Test, dec: Decider, client: string, name: string): Seen {
  const text = see(dec.decideName(client, name, new Decision()))
  const wire = see(dec.decideWire(client, toWire(name), 12, new Decision()))
  t.same(wire, text, `${name} from ${client}: wire and text agree`)
  return text
}

t.test('an exact deny under an allow wildcard answers NODATA: names below it stay allowed', async (t) => {
  const d = decider('allow: ["*.cdn.example.com"]\ndeny: [deny.cdn.example.com]\n')
  t.match(decide(t, d, '10.0.0.1', 'deny.cdn.example.com'), { verdict: 'blocked', rule: 'deny deny.cdn.example.com', reason: 'denied', answer: 'nodata' })
  t.match(decide(t, d, '10.0.0.1', 'x.deny.cdn.example.com'), { verdict: 'allowed', rule: 'allow *.cdn.example.com', reason: null })
  // The apex is not matched by its wildcard, and names exist below it: NODATA too.
  t.match(decide(t, d, '10.0.0.1', 'cdn.example.com'), { verdict: 'blocked', reason: 'not_allowed', answer: 'nodata' })
  t.match(decide(t, d, '10.0.0.1', 'other.example.com'), { verdict: 'blocked', reason: 'not_allowed', answer: 'nxdomain' })
})

t.test('a deny wildcard under an allow wildcard takes its whole subtree back: NXDOMAIN below it', async (t) => {
  const d = decider('allow: ["*.example.com"]\ndeny: ["*.ads.example.com"]\n')
  t.match(decide(t, d, '10.0.0.1', 'x.ads.example.com'), { verdict: 'blocked', rule: 'deny *.ads.example.com', reason: 'denied', answer: 'nxdomain' })
  t.match(decide(t, d, '10.0.0.1', 'y.x.ads.example.com'), { verdict: 'blocked', reason: 'denied', answer: 'nxdomain' })
  // ads.example.com itself is allowed by *.example.com; only what is under it is denied.
  t.match(decide(t, d, '10.0.0.1', 'ads.example.com'), { verdict: 'allowed', rule: 'allow *.example.com' })
  t.match(decide(t, d, '10.0.0.1', 'www.example.com'), { verdict: 'allowed' })
})

t.test('a deny wildcard with an allowed exact name below it: the deny wins, its ancestors answer NODATA', async (t) => {
  const d = decider('allow: ["ok.x.ads.example.com"]\ndeny: ["*.ads.example.com"]\n')
  t.match(decide(t, d, '10.0.0.1', 'ok.x.ads.example.com'), { verdict: 'blocked', reason: 'denied' }, 'a deny wildcard above wins over the exact allow')
  // Its ancestors answer NODATA although the deny wildcard shadows the exact allow: the
  // check is conservative, and NODATA for an empty name is harmless where NXDOMAIN for
  // a name with allowed children is not (RFC 8020).
  t.match(decide(t, d, '10.0.0.1', 'example.com'), { verdict: 'blocked', reason: 'not_allowed', answer: 'nodata' })
})

t.test('block_response: refused answers REFUSED whatever is below', async (t) => {
  const d = decider('allow: ["*.cdn.example.com"]\ndeny: [deny.cdn.example.com]\ndns:\n  block_response: refused\n')
  t.match(decide(t, d, '10.0.0.1', 'deny.cdn.example.com'), { verdict: 'blocked', answer: 'refused' })
  t.match(decide(t, d, '10.0.0.1', 'nothing.test'), { verdict: 'blocked', answer: 'refused' })
})

t.test('report entries and report mode pass blocked names as would_block', async (t) => {
  const d = decider('allow: [api.example.com]\nreport: ["*.trial.example"]\n')
  t.match(decide(t, d, '10.0.0.1', 'a.trial.example'), { verdict: 'would_block', reason: 'not_allowed', passedBy: '*.trial.example' })
  t.match(decide(t, d, '10.0.0.1', 'nothing.test'), { verdict: 'blocked', passedBy: null })
})

const GROUPS = `
allow: [api.example.com]
groups:
  - name: cams
    clients: [192.168.10.0/24, "fd00:10::/64"]
    allow: ["*.cams.example"]
    deny: [bad.cams.example]
  - name: lab
    clients: [192.168.20.0/24]
    allow: [api.example.com]
    mode: report
`

t.test('groups: the client picks the group, the group decides', async (t) => {
  const d = decider(GROUPS)
  t.match(decide(t, d, '192.168.10.7', 'x.cams.example'), { verdict: 'allowed', group: 'cams' })
  t.match(decide(t, d, 'fd00:10::9', 'x.cams.example'), { verdict: 'allowed', group: 'cams' })
  t.match(decide(t, d, '::ffff:192.168.10.7', 'x.cams.example'), { verdict: 'allowed', group: 'cams' }, 'IPv4-mapped client')
  t.match(decide(t, d, '192.168.10.7', 'api.example.com'), { verdict: 'blocked', group: 'cams', answer: 'nxdomain' })
  t.match(decide(t, d, '192.168.10.7', 'bad.cams.example'), { verdict: 'blocked', reason: 'denied', answer: 'nodata' })
  t.match(decide(t, d, '10.9.9.9', 'x.cams.example'), { verdict: 'blocked', group: 'default' })
  t.match(decide(t, d, '10.9.9.9', 'api.example.com'), { verdict: 'allowed', group: 'default' })
  t.match(decide(t, d, '192.168.20.5', 'nothing.test'), { verdict: 'would_block', group: 'lab', passedBy: '*' })
  t.match(decide(t, d, '192.168.20.5', 'api.example.com'), { verdict: 'allowed', group: 'lab' })
})

t.test('refuseUnnamed blocks in the client group whatever its mode', async (t) => {
  const d = decider(GROUPS)
  const out = d.refuseUnnamed('192.168.20.5', new Decision())
  t.match(see(out), { verdict: 'blocked', group: 'lab', rule: null, reason: 'not_allowed' })
})

t.test('a reused Decision carries nothing over from the previous decision', async (t) => {
  const d = decider('allow: [api.example.com]\nreport: ["*.trial.example"]\n')
  const out = new Decision()
  d.decideName('10.0.0.1', 'a.trial.example', out)
  t.match(see(d.decideName('10.0.0.1', 'api.example.com', out)), { verdict: 'allowed', passedBy: 'api.example.com', reason: null })
  t.match(see(d.decideName('10.0.0.1', 'nothing.test', out)), { verdict: 'blocked', passedBy: null, rule: null })
})
