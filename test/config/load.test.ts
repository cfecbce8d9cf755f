import t from 'tap'
import { readFileSync } from 'node:fs'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors } from '../../src/errors.js'
import { loadConfig, parseConfig, knownPresets, PRESETS_DIR } from '../../src/config/load.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-config-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, '# test\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\noptions edns0\n')

function errorsOf(text: string): string[] {
  try {
    parseConfig('test.yaml', text, { resolvConf })
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors.map((x) => x.message)
    throw e
  }
  return []
}

t.test('an empty file gives the documented defaults', async (t) => {
  const { config } = parseConfig('empty.yaml', '', { resolvConf })
  t.same(config.dns.listen, [{ host: '127.0.0.1', port: 5353, family: 4 }])
  t.same(config.dns.upstreams, [
    { host: '192.0.2.53', port: 53, family: 4 },
    { host: '2001:db8::53', port: 53, family: 6 },
  ], 'upstreams: [] reads resolv.conf, skipping zone-scoped addresses')
  t.equal(config.dns.blockResponse, 'nxdomain')
  t.equal(config.dns.rebindProtection, true)
  t.same(config.dns.clients.map((c) => c.text), ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'])
  t.same(config.sni.listen, [{ host: '127.0.0.1', port: 8443, family: 4 }])
  t.equal(config.sni.upstreamPort, 443)
  t.equal(config.sni.onBlock, 'reset')
  t.equal(config.sni.allowPrivateDestinations, false)
  t.equal(config.sni.maxClientHelloBytes, 16384)
  t.equal(config.sni.handshakeTimeoutMs, 10000)
  t.same(config.metrics.listen, { host: '127.0.0.1', port: 9153, family: 4 })
  t.same(config.firewall.nftables, { enabled: false, table: 'egressd', graceSeconds: 60, scope: 'shared', deviceKey: 'address', maxElementsPerDevice: 1024, maxElements: 65_536 })
  t.equal(config.log.level, 'info')
  t.same(config.presets, [])
  t.same(config.policy, [], 'presets, allow and deny are empty unless given')
})

t.test('the embedded default configuration loads with its preset', async (t) => {
  const { config } = loadConfig('config/egressd.yaml', { resolvConf })
  t.same(config.presets, ['dt-cloud-connector-gen2'])
  const names = config.policy.map((e) => e.entry)
  t.ok(names.includes('ccon-manager.prod.disruptive-technologies.com'))
  const ntp = config.policy.find((e) => e.entry === 'time{1,2,3,4}.google.com')
  t.same(ntp?.ports, [{ port: 123, proto: 'udp' }])
  const file = join(PRESETS_DIR, 'dt-cloud-connector-gen2.yaml')
  const line = readFileSync(file, 'utf8').split('\n').findIndex((l) => l.includes('- { name: "time{1,2,3,4}.google.com"')) + 1
  t.equal(ntp?.source, `preset dt-cloud-connector-gen2 (${file}:${line}:13)`, 'the full path: a preset may come from /etc/egressd/presets')
})

t.test('presets ship with the guide ports', async (t) => {
  t.same(knownPresets(PRESETS_DIR), ['balena-device', 'dt-cloud-connector', 'dt-cloud-connector-gen2', 'dt-cloud-connector-wildcards'])
  const { config } = parseConfig('p.yaml', 'presets: [dt-cloud-connector, dt-cloud-connector-wildcards]', { resolvConf })
  const ports = new Map(config.policy.map((e) => [e.entry, e.ports.map((p) => `${p.port}/${p.proto}`).join(',')]))
  t.equal(ports.get('{0..3}.resinio.pool.ntp.org'), '123/udp')
  t.equal(ports.get('registry-data.balena-cloud.com'), '443/tcp')
  t.equal(ports.get('auth.docker.io'), '443/tcp')
  t.equal(ports.get('*.pool.ntp.org'), '123/udp')
  for (const w of ['*.disruptive-technologies.com', '*.balena-cloud.com', '*.docker.com', '*.docker.io']) t.equal(ports.get(w), '443/tcp', w)
  t.equal(config.policy.filter((e) => e.source.startsWith('preset dt-cloud-connector (')).length, 14)
})

t.test('allow and deny entries keep their position as source', async (t) => {
  const { config } = parseConfig('s.yaml', 'allow:\n  - api.example.com\n  - {name: "ntp.example.com", ports: [123/udp, 4123/udp]}\ndeny: ["*.ads.example.com"]\n', { resolvConf })
  t.same(config.policy.map((e) => [e.action, e.entry, e.source]), [
    ['allow', 'api.example.com', 's.yaml:2:5'],
    ['allow', 'ntp.example.com', 's.yaml:3:12'],
    ['deny', '*.ads.example.com', 's.yaml:4:8'],
  ])
  t.same(config.policy[1]!.ports, [{ port: 123, proto: 'udp' }, { port: 4123, proto: 'udp' }])
  t.same(config.policy[0]!.ports, [{ port: 443, proto: 'tcp' }])
})

t.test('every problem is file:line:col with the key and the bad value', async (t) => {
  t.same(errorsOf('dns:\n  listne: ["127.0.0.1:53"]\n'), ['test.yaml:2:3: unknown key "dns.listne"; did you mean "dns.listen"?'])
  t.same(errorsOf('sni:\n  on_block: drop\n'), ['test.yaml:2:13: sni.on_block must be one of reset, alert, not "drop"'])
  t.same(errorsOf('dns:\n  rebind_protection: yes please\n'), ['test.yaml:2:22: dns.rebind_protection must be true or false, not "yes please"'])
  t.match(errorsOf('dns:\n  listen: ["127.0.0.1"]\n')[0], /^test\.yaml:2:12: dns\.listen: "127\.0\.0\.1" has no port/)
  t.match(errorsOf('dns:\n  listen: ["::1:53"]\n')[0], /^test\.yaml:2:12: .*brackets/)
  t.match(errorsOf('dns:\n  clients: [10.0.0.1/8]\n')[0], /^test\.yaml:2:13: dns\.clients: "10\.0\.0\.1\/8" has host bits set beyond \/8; did you mean 10\.0\.0\.0\/8\?/)
  t.match(errorsOf('sni:\n  upstream_port: 70000\n')[0], /^test\.yaml:2:18: sni\.upstream_port must be a whole number from 1 to 65535, not 70000/)
  t.match(errorsOf('presets: [dt-cloud-conector]\n')[0], /^test\.yaml:1:11: unknown preset "dt-cloud-conector"; did you mean "dt-cloud-connector"\?; known presets: balena-device, dt-cloud-connector, dt-cloud-connector-gen2, dt-cloud-connector-wildcards$/)
  t.match(errorsOf('allow:\n  - {name: a.example.com, ports: [443]}\n')[0], /^test\.yaml:2:35: allow\[\]\.ports: "443" is not a port like 443\/tcp/)
  t.match(errorsOf('allow: [{ports: [443/tcp]}]\n')[0], /needs a name/)
  t.match(errorsOf('bogus: 1\n')[0], /^test\.yaml:1:1: unknown key "bogus"; known keys here: dns, sni/)
})

t.test('bad patterns point into the string', async (t) => {
  const [plain] = errorsOf('allow:\n  - a.*.example.com\n')
  t.match(plain, /^test\.yaml:2:7: allow: "a\.\*\.example\.com": /, 'column of the * in a plain scalar')
  const [quoted] = errorsOf('allow:\n  - "*"\n')
  t.match(quoted, /^test\.yaml:2:6: allow: "\*": /, 'column inside a quoted scalar')
  t.match(errorsOf('deny: [".example.com"]\n')[0], /^test\.yaml:1:9: deny: "\.example\.com": /)
  t.equal(errorsOf(`allow: ["${'a'.repeat(64)}.com", "x..y", "ok.example.com"]\n`).length, 2, 'each bad entry reported, good ones not')
})

t.test('several problems in one pass', async (t) => {
  const errors = errorsOf('dns:\n  listen: [1]\n  block_response: nope\nsni:\n  handshake_timeout_ms: -1\nlog:\n  level: loud\n')
  t.equal(errors.length, 4, errors.join('\n'))
})

t.test('not YAML, wrong shape, missing file: messages, never a stack', async (t) => {
  const notYaml = errorsOf('dns: [unclosed\n')
  t.ok(notYaml.length >= 1)
  t.match(notYaml[0], /^test\.yaml:\d+:\d+: /)
  t.same(errorsOf('- just\n- a list\n'), ['test.yaml:1:1: the document must be a mapping (key: value lines), not a list'])
  t.same(errorsOf('dns: 5\n'), ['test.yaml:1:6: dns must be a mapping (key: value lines), not 5'])
  t.same(errorsOf('allow: "api.example.com"\n'), ['test.yaml:1:8: allow must be a list ([a, b] or "- a" lines), not "api.example.com"'])
  t.match(errorsOf('dns:\n  listen: []\ndns: {}\n')[0], /^test\.yaml:3:1: .*[Mm]ap keys must be unique/)
  t.throws(() => loadConfig(join(dir, 'missing.yaml')), { message: new RegExp(`missing\\.yaml:1:1: cannot read configuration: no such file`) })
})

