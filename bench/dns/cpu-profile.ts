/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and ranks functions by self time, so
 * a failed bar comes with where the daemon's core went.
 */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}

export interface Frame {
  fn: string
  where: string
  selfPct: number
}

/**
 * Ranks by self time over the profile's last `lastMs` milliseconds (all of it when 0), so
 * start-up (YAML parsing, compiling 10 000 rules) does not dilute the measured run.
 */
export function topFrames(file: string, count: number, lastMs = 0): { totalMs: number; frames: Frame[] } {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: ProfileNode[]
    startTime: number
    endTime: number
    samples?: number[]
    timeDeltas?: number[]
  }
  const hitsOf = new Map<number, number>()
  if (lastMs > 0 && prof.samples && prof.timeDeltas) {
    const from = prof.endTime - lastMs * 1000
    let t = prof.startTime
    for (let i = 0; i < prof.samples.length; i++) {
      t += prof.timeDeltas[i]!
      if (t >= from) hitsOf.set(prof.samples[i]!, (hitsOf.get(prof.samples[i]!) ?? 0) + 1)
    }
  } else {
    for (const n of prof.nodes) hitsOf.set(n.id, n.hitCount ?? 0)
  }
  const self = new Map<string, number>()
  let total = 0
  for (const n of prof.nodes) {
    const hits = hitsOf.get(n.id) ?? 0
    if (hits === 0) continue
    total += hits
    const url = n.callFrame.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/')
    const key = `${n.callFrame.functionName || '(anonymous)'}\t${url ? `${url}:${n.callFrame.lineNumber + 1}` : ''}`
    self.set(key, (self.get(key) ?? 0) + hits)
  }
  const frames = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([k, hits]) => {
      const [fn, where] = k.split('\t') as [string, string]
      return { fn, where, selfPct: Math.round((1000 * hits) / Math.max(1, total)) / 10 }
    })
  return { totalMs: lastMs > 0 ? Math.min(lastMs, (prof.endTime - prof.startTime) / 1000) : (prof.endTime - prof.startTime) / 1000, frames }
}
