import { execFile } from 'node:child_process'
import { Writable } from 'node:stream'
import { promisify } from 'node:util'
import { pino, type Logger } from 'pino'
import type { NftRunner } from '../../src/firewall/nft-runner.js'
import type { Rule, PortSpec } from '../../src/policy/types.js'

export const execFileP = promisify(execFile)

/** A pino logger whose JSON lines are kept for assertions. */
export function captureLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>)
      cb()
    },
  })
  return { log: pino({ level: 'debug' }, stream), lines }
}

export function rule(ports: readonly PortSpec[] = [{ port: 443, proto: 'tcp' }], pattern = 'api.example.com'): Rule {
  return { id: 0, action: 'allow', pattern, wildcard: false, entry: pattern, ports, source: 'test.yaml:1:1' }
}

/**
 * Records scripts; each run stays open until the test releases it, so a test decides
 * what arrives while nft "runs". `fail` makes the next runs reject.
 */
export class FakeRunner implements NftRunner {
  readonly scripts: string[] = []
  private readonly gates: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  auto = true
  failures = 0

  run(script: string): Promise<void> {
    this.scripts.push(script)
    if (this.failures > 0) {
      this.failures--
      return Promise.reject(new Error('Error: Could not process rule: No such file or directory'))
    }
    if (this.auto) return Promise.resolve()
    return new Promise((resolve, reject) => this.gates.push({ resolve, reject }))
  }

  get open(): number {
    return this.gates.length
  }

  release(): void {
    const g = this.gates.shift()
    if (!g) throw new Error('no nft run is waiting')
    g.resolve()
  }
}

/** Resolves after pending setImmediate callbacks (the sink's flush) have run. */
export function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r))
}

export interface NetnsProbe {
  ok: boolean
  reason: string
}

/** Why real-nft tests cannot run here, or ok. Creates and deletes a probe namespace. */
export async function probeNetns(): Promise<NetnsProbe> {
  if (process.platform !== 'linux') return { ok: false, reason: 'not Linux' }
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root (nft and ip netns need CAP_NET_ADMIN)' }
  for (const [tool, flag] of [['ip', '-V'], ['nft', '--version']] as const) {
    try {
      await execFileP(tool, [flag])
    } catch {
      return { ok: false, reason: `no ${tool} binary` }
    }
  }
  const ns = `egressd-probe-${process.pid}`
  try {
    await execFileP('ip', ['netns', 'add', ns])
  } catch (e) {
    return { ok: false, reason: `ip netns add failed: ${(e as Error).message.split('\n')[0]}` }
  }
  try {
    await execFileP('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'])
    return { ok: true, reason: '' }
  } catch (e) {
    return { ok: false, reason: `nft in a namespace failed: ${(e as Error).message.split('\n')[0]}` }
  } finally {
    await execFileP('ip', ['netns', 'del', ns]).catch(() => {})
  }
}

export interface NftElement {
  readonly key: string
  readonly timeout: number
  readonly expires: number
}

/** `nft -j list set` in a namespace, as `addr . proto . port` (scope device: `client . addr . proto . port`) keys with timeout/expires in seconds. */
export async function listSet(ns: string, table: string, set: string): Promise<NftElement[]> {
  const { stdout } = await execFileP('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'set', 'inet', table, set], { maxBuffer: 256 * 1024 * 1024 })
  const doc = JSON.parse(stdout) as { nftables: Array<{ set?: { elem?: Array<{ elem: { val: { concat: Array<string | number> }; timeout: number; expires: number } }> } }> }
  const out: NftElement[] = []
  for (const item of doc.nftables) {
    for (const e of item.set?.elem ?? []) {
      out.push({ key: e.elem.val.concat.join(' . '), timeout: e.elem.timeout, expires: e.elem.expires })
    }
  }
  return out
}
