/**
 * packaging/container/egressd-ruleset.sh, the entry point of deploy/balena's `ruleset`
 * service: the shipped ruleset loaded with its defines from the environment. Each case
 * runs in a network namespace of its own (`unshare -n`), so the host's ruleset is never
 * touched; the namespace goes away with the shell.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { runCommand } from '../helpers/daemon.js'
import { isRoot, needTool, ROOT } from './installed.js'

const LOADER = join(ROOT, 'packaging', 'container', 'egressd-ruleset.sh')
const RULESET = join(ROOT, 'config', 'nftables', 'egressd.nft')

const skip = !isRoot ? 'not root: a network namespace (unshare -n) and nft need CAP_SYS_ADMIN and CAP_NET_ADMIN' : ((await needTool('nft', 'nftables')) || (await needTool('unshare', 'util-linux')))

/** Runs `script` (sh) in a fresh network namespace with `vars` set and the loader as $LOADER. */
function inNamespace(vars: Record<string, string>, script: string) {
  const assignments = Object.entries({ EGRESSD_RULESET: RULESET, LOADER, ...vars }).map(([k, v]) => `${k}=${v}`)
  return runCommand('env', [...assignments, 'unshare', '-n', 'sh', '-c', script], 30_000)
}

t.test('defines come from the environment: interfaces, ports, scope, admin ports', { skip }, async (t) => {
  const r = await inNamespace(
    { DEVICE_IF: 'eth9', WAN_IF: 'eth0', EGRESSD_DNS_PORT: '5353', EGRESSD_SNI_PORT: '8443', EGRESSD_SCOPE: 'device_scope', GATEWAY_ADMIN_TCP_PORTS: '{ 22, 22222 }' },
    '"$LOADER" --list',
  )
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /egressd-ruleset: loaded .*DEVICE_IF=eth9 WAN_IF=eth0 DNS=5353 SNI=8443 scope=device_scope/)
  t.match(r.stdout, /iifname "eth9" udp dport 53 redirect to :5353/)
  t.match(r.stdout, /iifname "eth9" tcp dport 443 redirect to :8443/)
  t.match(r.stdout, /iifname "eth9" oifname "eth0" masquerade/)
  t.match(r.stdout, /tcp dport \{ 22, 22222 \} accept/)
  t.match(r.stdout, /ip saddr \. ip daddr \. meta l4proto \. th dport @allow4_dev accept/, 'device scope: the forward chain reads the per-device sets')
})

t.test('unset variables keep the file\'s defines; a set of interfaces is taken as written', { skip }, async (t) => {
  const r = await inNamespace({ DEVICE_IF: '{ "eth1", "wlan0" }' }, '"$LOADER" --list')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /iifname \{ "eth1", "wlan0" \} udp dport 53 redirect to :53/, 'DNS port 53, the file\'s own')
  t.match(r.stdout, /oifname "wan0" masquerade/, 'WAN_IF wan0, the file\'s own')
})

t.test('loading again keeps the sets\' elements (a service restart never cuts devices off)', { skip }, async (t) => {
  const r = await inNamespace(
    { DEVICE_IF: 'eth9' },
    '"$LOADER" >/dev/null && nft add element inet egressd allow4 "{ 192.0.2.7 . udp . 123 timeout 1h }" && "$LOADER" >/dev/null && nft list set inet egressd allow4',
  )
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /192\.0\.2\.7 \. udp \. 123/)
})

t.test('a value that is not what its define takes stops it before anything is loaded (exit 2)', { skip }, async (t) => {
  const bad: [string, string, RegExp][] = [
    ['DEVICE_IF', 'x"; flush ruleset', /DEVICE_IF: not an interface name/],
    ['DEVICE_IF', 'an-interface-name-too-long', /not an interface name \(at most 15/],
    ['WAN_IF', '{ "a" } accept }', /WAN_IF: not a set of interface names/],
    ['WAN_IF', '{ "a" accept }', /WAN_IF: not a set of interface names/],
    ['WAN_IF', 'eth1\neth2', /WAN_IF: not an interface name/],
    ['EGRESSD_DNS_PORT', '53; drop', /EGRESSD_DNS_PORT: not a port/],
    ['EGRESSD_SNI_PORT', '70000', /EGRESSD_SNI_PORT: not a port/],
    ['EGRESSD_SCOPE', 'everyone', /EGRESSD_SCOPE: shared_scope, device_scope or device_mac_scope/],
    ['GATEWAY_ADMIN_TCP_PORTS', '22', /a set of ports like \{ 22 \}/],
    ['GATEWAY_ADMIN_TCP_PORTS', '{ 22 } accept', /a set of ports like \{ 22 \}/],
    ['GATEWAY_ADMIN_TCP_PORTS', '{ 22 } accept }', /a set of ports like \{ 22 \}/],
  ]
  for (const [name, value, message] of bad) {
    const r = await inNamespace({ [name]: value }, '"$LOADER"; rc=$?; nft list tables; exit $rc')
    t.equal(r.code, 2, `${name}=${value}: exit 2`)
    t.match(r.stderr, message, `${name}=${value}: says why`)
    t.notMatch(r.stdout, /egressd/, `${name}=${value}: nothing loaded`)
  }
  const missing = await inNamespace({ EGRESSD_RULESET: '/nonexistent.nft' }, '"$LOADER"')
  t.equal(missing.code, 2)
  t.match(missing.stderr, /cannot read \/nonexistent\.nft/)
})

interface ComposeService {
  cap_add?: string[]
  user?: string
  network_mode?: string
  entrypoint?: string[]
  environment?: Record<string, string>
}

t.test('deploy/balena: the ruleset service loads with its own environment and agrees with egressd.yaml', { skip }, async (t) => {
  const compose = parse(readFileSync(join(ROOT, 'deploy', 'balena', 'docker-compose.yml'), 'utf8')) as { services: Record<string, ComposeService> }
  const conf = parse(readFileSync(join(ROOT, 'deploy', 'balena', 'egressd.yaml'), 'utf8')) as {
    dns: { listen: string[] }; sni: { listen: string[] }; firewall: { nftables: { enabled: boolean; scope?: string } }
  }
  const rs = compose.services.ruleset!
  const eg = compose.services.egressd!
  t.same([rs.user, rs.network_mode, rs.cap_add, rs.entrypoint], ['0:0', 'host', ['NET_ADMIN'], ['egressd-ruleset']], 'root with NET_ADMIN on the host network, the loader as entry point')
  const env = rs.environment!
  const port = (hostPort: string) => hostPort.slice(hostPort.lastIndexOf(':') + 1)
  t.equal(env.EGRESSD_DNS_PORT, port(conf.dns.listen[0]!), 'the redirect goes to dns.listen\'s port')
  t.equal(env.EGRESSD_SNI_PORT, port(conf.sni.listen[0]!), 'and to sni.listen\'s')
  t.equal(env.EGRESSD_SCOPE, `${conf.firewall.nftables.scope ?? 'shared'}_scope`, 'the forward chain reads the sets the sink fills')
  if (conf.firewall.nftables.enabled) t.same(eg.cap_add, ['NET_ADMIN'], 'the sink is on: the egressd service has NET_ADMIN for nft')
  const r = await inNamespace(env, '"$LOADER" --list')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, new RegExp(`iifname "${env.DEVICE_IF}" udp dport 53 redirect to :${env.EGRESSD_DNS_PORT}`))
})

