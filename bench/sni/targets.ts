/**
 * The proxies under test, each started on the proxy core with the same allowlist
 * (`bench.example` only) and the same backend: sniproxy, egressd, and for the blocked
 * test a bare reset server as the ceiling.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, spawnPinned, waitForPort, type Child } from './procs.js'

export interface Target {
  readonly name: string
  readonly port: number
  /** The process whose CPU time and RSS are the proxy's cost; null for direct. */
  readonly child: Child | null
  readonly version: string
}

function versionOf(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0]!
  } catch (e) {
    const out = (e as { stdout?: string; stderr?: string })
    return (out.stdout || out.stderr || 'unknown').toString().trim().split('\n')[0]!
  }
}

export async function startSniproxy(dir: string, core: number, backendPort: number, nofile: number): Promise<Target> {
  const port = await freePort()
  const conf = join(dir, `sniproxy-${port}.conf`)
  // Table entries are regular expressions; an IP-literal backend needs no resolver.
  writeFileSync(conf, `user root
pidfile ${join(dir, 'sniproxy.pid')}
error_log {
  filename ${join(dir, 'sniproxy-error.log')}
  priority warning
}
listener 127.0.0.1:${port} {
  protocol tls
  table bench
}
table bench {
  ^bench\\.example$ 127.0.0.1:${backendPort}
}
`)
  const child = spawnPinned('sniproxy', core, 'sniproxy', ['-f', '-n', String(nofile), '-c', conf])
  await waitForPort(port, child)
  return { name: 'sniproxy', port, child, version: versionOf('sniproxy', ['-V']) }
}

/** `dist/cli.js` of this checkout, built with `npm run build` when it is missing. */
export function egressdCli(root: string, log: (msg: string) => void): string {
  const cli = join(root, 'dist', 'cli.js')
  if (!existsSync(cli)) {
    log('dist/cli.js missing: npm run build')
    execFileSync('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' })
  }
  return cli
}

export async function startEgressd(opts: {
  dir: string
  core: number
  cli: string
  backendPort: number
  dnsUpstreamPort: number
  nodeArgs: string[]
  /** Only for the idle test, which reads egressd's own heap and connection gauges. */
  metricsPort?: number
}): Promise<Target> {
  const port = await freePort()
  const dnsPort = await freePort()
  const conf = join(opts.dir, `egressd-${port}.yaml`)
  writeFileSync(conf, `# egressd SNI benchmark; generated.
dns:
  listen: ["127.0.0.1:${dnsPort}"]
  upstreams: ["127.0.0.1:${opts.dnsUpstreamPort}"]
  rebind_protection: false
sni:
  listen: ["127.0.0.1:${port}"]
  upstream_port: ${opts.backendPort}
  allow_private_destinations: true
metrics:
  listen: ${opts.metricsPort ? `"127.0.0.1:${opts.metricsPort}"` : 'null'}
log:
  level: warn
allow: ["bench.example"]
`)
  const child = spawnPinned('egressd', opts.core, process.execPath, [...opts.nodeArgs, opts.cli, 'run', '-c', conf])
  // The ready line is at info, below this config's level: wait for the port instead.
  await waitForPort(port, child)
  return { name: 'egressd', port, child, version: `egressd ${versionOf(process.execPath, [opts.cli, '--version'])} on node ${process.version}` }
}

export async function startResetServer(core: number): Promise<Target> {
  const port = await freePort()
  const script = fileURLToPath(new URL('./reset-server.js', import.meta.url))
  const child = spawnPinned('reset-server', core, process.execPath, [script, String(port)])
  await waitForPort(port, child)
  return { name: 'reset-server', port, child, version: `node ${process.version}` }
}

/** The named samples of a Prometheus text exposition (labels ignored, first sample of each name). */
export async function scrape(port: number, names: string[]): Promise<Record<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) })
  const text = await res.text()
  const out: Record<string, number> = {}
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m && names.includes(m[1]!) && !(m[1]! in out)) out[m[1]!] = Number(m[3])
  }
  return out
}
