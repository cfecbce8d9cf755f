import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors } from '../../src/errors.js'
import { allGroups } from '../../src/config/groups.js'
import { parseConfig } from '../../src/config/load.js'
import { GroupSet } from '../../src/policy/groups.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-groups-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')

const parse = (text: string) => parseConfig('g.yaml', text, { resolvConf })
function errorsOf(text: string): string[] {
  try {
    parse(text)
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors.map((x) => x.message)
    throw e
  }
  return []
}

const CONFIG = `
presets: [dt-cloud-connector-gen2]
allow: ["api.example.com"]
report: ["*.trial.example"]
groups:
  - name: gen2
    clients: [192.168.10.0/24, "fd00:10::/64"]
    presets: [dt-cloud-connector-gen2]
  - name: balena
    clients: [192.168.20.0/24]
    presets: [dt-cloud-connector-wildcards]
    deny: ["registry.docker.io"]
    mode: report
    report_ports: [443/tcp]
  - name: gen2-copy
    clients: [10.10.0.0/16]
    presets: [dt-cloud-connector-gen2]
`

t.test('groups load in order with their own lists; the top level is the default group', async (t) => {
  const { config, warnings } = parse(CONFIG)
  t.same(warnings, [])
  t.same(config.groups!.map((g) => g.name), ['gen2', 'balena', 'gen2-copy'])
  t.same(config.groups![1]!.reportPorts, [{ port: 443, proto: 'tcp' }])
  t.same(config.groups![0]!.reportPorts, [{ port: 443, proto: 'tcp' }, { port: 123, proto: 'udp' }], 'report_ports default: TLS and NTP')
  t.equal(config.groups![1]!.mode, 'report')
  t.equal(config.groups![0]!.mode, 'enforce')
  t.match(config.groups![1]!.source, /^g\.yaml:9:5$/)
  t.same(config.report!.map((e) => e.entry), ['*.trial.example'])
  t.ok(config.policy.some((e) => e.entry === 'api.example.com'), 'Config.policy stays the default group')
  const all = allGroups(config)
  t.same(all.map((g) => g.name), ['gen2', 'balena', 'gen2-copy', 'default'])
})

t.test('identical entry lists compile once; a reload reuses unchanged ones', async (t) => {
  const { config } = parse(CONFIG)
  const set = GroupSet.compile(allGroups(config))
  const [gen2, balena, copy, def] = set.groups
  t.equal(gen2!.policy, copy!.policy, 'the same preset list: one trie')
  t.not(gen2!.policy, def!.policy, 'the default adds api.example.com')
  t.equal(set.compiled, 4, 'gen2 (shared), balena, default, default report entries')
  const again = GroupSet.compile(allGroups(parse(CONFIG).config), set)
  t.equal(again.groups[1]!.policy, balena!.policy, 'unchanged on reload: not recompiled')
  const changed = GroupSet.compile(allGroups(parse(CONFIG.replace('registry.docker.io', 'hub.docker.io')).config), set)
  t.not(changed.groups[1]!.policy, balena!.policy)
  t.equal(changed.groups[0]!.policy, gen2!.policy)
})

t.test('select: first group containing the client, IPv4-mapped as IPv4, default otherwise', async (t) => {
  const set = GroupSet.compile(allGroups(parse(CONFIG).config))
  const cases: [string, string][] = [
    ['192.168.10.7', 'gen2'],
    ['192.168.20.7', 'balena'],
    ['::ffff:192.168.20.9', 'balena'],
    ['fd00:10::5', 'gen2'],
    ['fd00:11::5', 'default'],
    ['10.10.200.1', 'gen2-copy'],
    ['10.11.0.1', 'default'],
    ['127.0.0.1', 'default'],
    ['not an address', 'default'],
    ['', 'default'],
    ['192.168.10.7', 'gen2'],
  ]
  for (const [addr, name] of cases) t.equal(set.select(addr).name, name, addr)
  const none = GroupSet.compile(allGroups(parse('allow: [a.example]').config))
  t.equal(none.named, false)
  t.equal(none.select('192.168.10.7'), none.default)
})

t.test('report rules: entries first (their ports), then report mode (report_ports)', async (t) => {
  const set = GroupSet.compile(allGroups(parse(CONFIG).config))
  const balena = set.byName('balena')!
  t.equal(balena.policy.match('registry.docker.io')?.action, 'deny')
  const passed = balena.reportRule('registry.docker.io')
  t.equal(passed?.id, -1, 'report mode lets even a denied name through')
  t.same(passed?.ports, [{ port: 443, proto: 'tcp' }])
  const def = set.default
  t.equal(def.reportRule('x.trial.example')?.pattern, '*.trial.example')
  t.equal(def.reportRule('evil.example'), null, 'enforce: only report entries pass')
  t.equal(set.byName('gen2')!.reports, false)
})

t.test('group errors are file:line:col with the key and value', async (t) => {
  t.match(errorsOf('groups:\n  - name: default\n    clients: [10.0.0.0/8]\n'), [/^g\.yaml:2:11: .*"default" is reserved/])
  t.match(errorsOf('groups:\n  - name: Bad Name\n    clients: [10.0.0.0/8]\n'), [/^g\.yaml:2:11: groups\[\]\.name "Bad Name" must be/])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.0/8]}\n  - {name: a, clients: [10.1.0.0/16]}\n'), [/^g\.yaml:3:12: .*"a" is already used at g\.yaml:2:12/])
  t.match(errorsOf('groups:\n  - name: a\n'), [/^g\.yaml:2:5: groups\.a needs clients/])
  t.match(errorsOf('groups:\n  - {name: a, clients: []}\n'), [/groups\.a\.clients is empty/])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.1/8]}\n'), [/^g\.yaml:2:25: groups\.a\.clients: "10\.0\.0\.1\/8" has host bits set/])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.0/8], mode: audit}\n'), [/groups\.a\.mode must be one of enforce, report/])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.0/8], alow: [x.example]}\n'), [/unknown key "groups\[\]\.alow"; did you mean "groups\[\]\.allow"\?/])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.0/8], allow: ["a.*.example"]}\n'), [/^g\.yaml:2:49: groups\.a\.allow: "a\.\*\.example": /])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.0/8], presets: [nope]}\n'), [/unknown preset "nope"/])
  t.match(errorsOf('groups:\n  - {name: a, clients: [10.0.0.0/8], report_ports: [443]}\n'), [/groups\.a\.report_ports: "443" is not a port/])
  t.match(errorsOf('mode: strict\n'), [/^g\.yaml:1:7: mode must be one of enforce, report/])
  t.match(errorsOf('groups:\n  - "10.0.0.0/8"\n'), [/^g\.yaml:2:5: groups items are mappings/])
})

t.test('validate warns about shadowed groups (unions too) and clients outside dns.clients', async (t) => {
  const { warnings } = parse([
    'dns: {clients: [192.168.0.0/16]}',
    'groups:',
    '  - {name: a, clients: [192.168.1.0/25]}',
    '  - {name: b, clients: [192.168.1.128/25]}',
    '  - {name: c, clients: [192.168.1.0/24]}',
    '  - {name: d, clients: [192.168.0.0/23]}',
    '  - {name: e, clients: [10.1.0.0/16]}',
    '  - {name: f, clients: [10.1.0.0/16, 10.2.0.0/16]}',
    '  - {name: g, clients: [192.168.9.0/24], allow: [x.example, x.example]}',
  ].join('\n'))
  t.match(warnings, [
    /^g\.yaml:9:61: warning: group "g": "x\.example" duplicates "x\.example" at g\.yaml:9:50/,
    /^g\.yaml:5:5: warning: group "c" is never chosen: every client in it falls in an earlier group \("a", "b"\)/,
    /^g\.yaml:7:5: warning: group "e" clients 10\.1\.0\.0\/16 are not all within dns\.clients/,
    /^g\.yaml:8:5: warning: group "f" clients 10\.1\.0\.0\/16, 10\.2\.0\.0\/16/,
  ])
  t.equal(warnings.length, 4, warnings.join('\n'))
})

t.test('GroupSet.explain says which CIDR decided', async (t) => {
  const set = GroupSet.compile(allGroups(parse(CONFIG).config))
  t.equal(set.explain('192.168.20.1').cidr?.text, '192.168.20.0/24')
  t.equal(set.explain('192.168.30.1').group.name, 'default')
})
