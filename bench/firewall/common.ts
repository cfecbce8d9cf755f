/**
 * What the firewall benches share (bench/firewall.ts, bench/firewall-scope.ts): the
 * rules their answers carry, the percentile and rounding of their reports, counter reads,
 * and whether this machine can run them (root, Linux, nft and ip).
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Registry } from 'prom-client'
import type { Rule } from '../../src/policy/types.js'

export const execFileP = promisify(execFile)
/** firewall.nftables.grace_seconds of the sinks under test. */
export const GRACE = 60

export function rule(id: number, ports: Rule['ports']): Rule {
  return { id, action: 'allow', pattern: `r${id}.example.com`, wildcard: false, entry: `r${id}.example.com`, ports, source: 'bench' }
}
export const R443 = rule(0, [{ port: 443, proto: 'tcp' }])
export const R443_123 = rule(1, [
  { port: 443, proto: 'tcp' },
  { port: 123, proto: 'udp' },
])

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
}

export function round(x: number): number {
  return Math.round(x * 1000) / 1000
}

/** The sum of a metric's series whose labels include `labels`. */
export async function counterValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  return m.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((a, v) => a + v.value, 0)
}

/** Why this machine cannot run a firewall bench, or null when it can. */
export async function canRun(): Promise<string | null> {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not root'
  try {
    await execFileP('nft', ['--version'])
    await execFileP('ip', ['-V'])
  } catch {
    return 'no nft or ip binary'
  }
  return null
}
