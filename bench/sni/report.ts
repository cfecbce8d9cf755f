/** Percentiles, JSON lines and the closing table of the SNI benchmark. */

/** Nearest-rank percentile of `xs` (not modified); NaN when empty. */
export function percentile(xs: Float64Array, p: number): number {
  if (xs.length === 0) return NaN
  const sorted = Float64Array.from(xs).sort()
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export function round(x: number, digits = 2): number {
  if (!Number.isFinite(x)) return x
  const f = 10 ** digits
  return Math.round(x * f) / f
}

export function emit(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'sni', ...obj }) + '\n')
}

export function table(title: string, header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))]
  const widths = header.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? '').length)))
  const line = (r: (string | number)[]): string =>
    '| ' + r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!))).join(' | ') + ' |'
  return [`\n${title}`, line(cells[0]!), '|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 1) + '-' : '-'.repeat(w + 1) + ':')).join('|') + '|',
    ...cells.slice(1).map(line)].join('\n')
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '–'
  if (Number.isInteger(x)) return x.toString()
  if (Math.abs(x) >= 100) return Math.round(x).toString()
  if (Math.abs(x) >= 10) return x.toFixed(1)
  return x.toFixed(2)
}
