/**
 * Shared by the install tests (npm tarball, Debian package, container image): start an
 * installed egressd on loopback high ports in front of a fake upstream, check that it
 * is ready and answers `dig`, and read its idle footprint.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fakeUpstream, hasTool } from '../dns/helpers.js'
import { freePort, runCommand } from '../helpers/daemon.js'
import { watchJsonLines, type JsonProcess } from '../helpers/json-process.js'
import { WORKER_IDLE_MS } from '../../src/daemon/reload.js'

export const ROOT = process.cwd()
export const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version

export const isRoot = process.getuid?.() === 0

/** A reason to skip when a tool is missing, naming the Debian package; false when present. */
export async function needTool(tool: string, pkg: string): Promise<string | false> {
  return (await hasTool(tool)) ? false : `${tool} not installed (Debian package ${pkg}; .ci/run installs it)`
}

export interface Ports {
  dns: number
  sni: number
  metrics: number
}

export async function freePorts(): Promise<Ports> {
  return { dns: await freePort(), sni: await freePort(), metrics: await freePort() }
}

/** A configuration on loopback high ports that allows `api.example.com` and forwards to `upstreamPort`. */
export function loopbackConfig(p: Ports, upstreamPort: number): string {
  return [
    'dns:',
    `  listen: ["127.0.0.1:${p.dns}"]`,
    `  upstreams: ["127.0.0.1:${upstreamPort}"]`,
    'sni:',
    `  listen: ["127.0.0.1:${p.sni}"]`,
    'metrics:',
    `  listen: "127.0.0.1:${p.metrics}"`,
    'presets: [dt-cloud-connector-gen2]',
    'allow: ["api.example.com"]',
    '',
  ].join('\n')
}

export function writeTemp(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-install-'))
  const file = join(dir, name)
  writeFileSync(file, text)
  return file
}

export interface Smoke {
  ready: Record<string, unknown>
  readyz: number
  allowed: string
  blocked: string
  /** Resident set size a few seconds after `ready`, in KiB (from /proc): the start-up load's worker thread is still up. */
  idleRssKiB: number
  /** Resident set size once that worker has exited (WORKER_IDLE_MS after its last request), in KiB. */
  settledRssKiB: number
}

/** The fake upstream every install test points egressd at: A 198.51.100.7 for anything. */
export async function upstream(): Promise<{ port: number; close: () => Promise<void> }> {
  const u = await fakeUpstream(() => ({ answers: [{ name: 'api.example.com', type: 'A', ttl: 300, data: '198.51.100.7' }] as never }))
  return { port: u.port, close: async () => void (await u.close()) }
}

/**
 * Spawns `cmd args` (which must run egressd in the foreground), waits for the ready log
 * line, asks /readyz, digs an allowed and a blocked name, measures idle RSS of `pidOf()`
 * (the process itself by default; a container runtime passes the container's pid), stops it.
 */
export async function smoke(cmd: string, args: string[], p: Ports, opts: { env?: NodeJS.ProcessEnv; pidOf?: (proc: JsonProcess) => Promise<number>; readyTimeoutMs?: number } = {}): Promise<Smoke> {
  // tap's spawn wrapper puts its NODE_OPTIONS hooks (and coverage) back into any env it is
  // given; loaded into the daemon they added ~75 MiB to the measured RSS. `env -u` strips them after it.
  const proc = spawn('env', ['-u', 'NODE_OPTIONS', '-u', 'NODE_V8_COVERAGE', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env })
  // Lenient: a container runtime may print its own lines beside egressd's JSON.
  const j = watchJsonLines(proc, false)
  try {
    const ready = await j.waitFor((l) => l.msg === 'ready', 'log "ready"', opts.readyTimeoutMs ?? 30_000)
    const readyz = (await fetch(`http://127.0.0.1:${p.metrics}/readyz`)).status
    const dig = async (name: string) => (await runCommand('dig', ['@127.0.0.1', '-p', String(p.dns), '+tries=1', '+time=3', name, 'A'])).stdout
    const allowed = await dig('api.example.com')
    const blocked = await dig('www.example.org')
    await new Promise((r) => setTimeout(r, 2000))
    const pid = opts.pidOf ? await opts.pidOf(j) : proc.pid!
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN)
    const idleRssKiB = rss()
    await new Promise((r) => setTimeout(r, WORKER_IDLE_MS + 1000))
    return { ready, readyz, allowed, blocked, idleRssKiB, settledRssKiB: rss() }
  } catch (e) {
    throw new Error(`${(e as Error).message}\nstderr: ${j.stderr().slice(-2000)}\nstdout: ${JSON.stringify(j.lines.slice(-10))}`)
  } finally {
    await j.stop(10_000)
  }
}

export const status = (digOut: string): string => /status: ([A-Z]+)/.exec(digOut)?.[1] ?? 'none'

/** `du -sk`, in KiB. */
export async function diskKiB(...paths: string[]): Promise<number> {
  const r = await runCommand('du', ['-skc', ...paths])
  return Number(/^(\d+)\s+total$/m.exec(r.stdout)?.[1] ?? NaN)
}
