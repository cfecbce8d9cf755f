/**
 * `node build/bench/sni/prof-top.js FILE.cpuprofile [N]`: the N functions with the most
 * self time in a `node --cpu-prof` profile (see `--egressd-cpu-prof` of bench/sni), and
 * the share of samples under each source file of egressd.
 */
import { readFileSync } from 'node:fs'

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
  children?: number[]
}

interface Profile {
  nodes: Node[]
  samples: number[]
  timeDeltas: number[]
}

/** `node_modules/<pkg>/…` for dependencies, `dist/…` for egressd, `node:…` as is; '(native)' when no script. */
function shortFile(url: string): string {
  if (url === '') return '(native)'
  const nm = url.indexOf('/node_modules/')
  if (nm >= 0) return url.slice(nm + 1)
  const dist = url.lastIndexOf('/dist/')
  return dist >= 0 ? url.slice(dist + 1) : url.replace(/^file:\/\//, '')
}

export function topFrames(p: Profile, n: number): string[] {
  const byId = new Map(p.nodes.map((x) => [x.id, x]))
  const self = new Map<string, number>()
  const perFile = new Map<string, number>()
  let total = 0
  let idle = 0
  for (let i = 0; i < p.samples.length; i++) {
    const node = byId.get(p.samples[i]!)
    if (!node) continue
    const us = p.timeDeltas[i] ?? 0
    const f = node.callFrame
    // Waiting in epoll is not work: shares are of the busy samples only.
    if (f.functionName === '(idle)') {
      idle += us
      continue
    }
    total += us
    const file = shortFile(f.url)
    const key = `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`
    self.set(key, (self.get(key) ?? 0) + us)
    perFile.set(file, (perFile.get(file) ?? 0) + us)
  }
  const pct = (us: number): string => ((100 * us) / Math.max(1, total)).toFixed(1).padStart(5) + ' %'
  const lines = [`busy ${(total / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms; shares of busy time`, '', 'self time by function:']
  for (const [k, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, n)) lines.push(`${pct(us)}  ${k}`)
  const groups = new Map<string, number>()
  for (const [file, us] of perFile) {
    const g = file.startsWith('dist/') ? 'egressd (dist/)' : file.startsWith('node_modules/') ? 'dependencies (node_modules/)'
      : file.startsWith('node:') ? 'Node.js library (node:*)' : 'native, GC, V8 (no script)'
    groups.set(g, (groups.get(g) ?? 0) + us)
  }
  lines.push('', 'self time by origin:')
  for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1])) lines.push(`${pct(us)}  ${g}`)
  lines.push('', 'self time by file:')
  for (const [k, us] of [...perFile].sort((a, b) => b[1] - a[1]).slice(0, n)) lines.push(`${pct(us)}  ${k}`)
  return lines
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, n] = process.argv.slice(2)
  if (!file) {
    process.stderr.write('usage: prof-top FILE.cpuprofile [N]\n')
    process.exit(2)
  }
  process.stdout.write(topFrames(JSON.parse(readFileSync(file, 'utf8')) as Profile, Number(n ?? 25)).join('\n') + '\n')
}
