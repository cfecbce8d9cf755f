/**
 * Shared by the ops tests: where the assets are, the one list of metric names they may
 * use, a PromQL name extractor, and a small process runner. Not a test file itself.
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const PROMETHEUS_DIR = join(ROOT, 'config', 'prometheus')
export const RULES_FILE = join(PROMETHEUS_DIR, 'egressd.rules.yml')
export const RULES_TEST_FILE = join(PROMETHEUS_DIR, 'rules.test.yml')
export const METRIC_NAMES_FILE = join(PROMETHEUS_DIR, 'metric-names.txt')
export const DASHBOARD_FILE = join(ROOT, 'config', 'grafana', 'egressd.json')
export const UNIT_FILE = join(ROOT, 'systemd', 'egressd.service')
export const NFT_DROP_IN = join(ROOT, 'systemd', 'egressd-nft.conf')

/**
 * metric-names.txt: one name a line; '#' starts a comment. A trailing
 * `# only with <config key>` marks a name the daemon registers only with that setting
 * on, `# added by Prometheus` one that no egressd scrape has (`up`). The map holds the
 * config key, or 'prometheus', or null for names every scrape of egressd has.
 */
export function readMetricConditions(file = METRIC_NAMES_FILE): Map<string, string | null> {
  const names = new Map<string, string | null>()
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const hash = raw.indexOf('#')
    const name = (hash >= 0 ? raw.slice(0, hash) : raw).trim()
    if (name === '') continue
    const comment = hash >= 0 ? raw.slice(hash + 1).trim() : ''
    const only = /^only with (\S+)/.exec(comment)?.[1] ?? (/^added by Prometheus/.test(comment) ? 'prometheus' : null)
    names.set(name, only)
  }
  return names
}

/** Every name in metric-names.txt, conditional ones included. */
export function readMetricNames(file = METRIC_NAMES_FILE): Set<string> {
  return new Set(readMetricConditions(file).keys())
}

// Metric families the assets may draw from: egressd's own, prom-client's defaults, and
// Prometheus' `up`. Anything else that looks like a name (functions, `by` labels) is not.
const FAMILY = /^(?:egressd_|process_|nodejs_)[a-z0-9_]+$/
const HISTOGRAM_SERIES = /_(?:bucket|sum|count)$/

/**
 * Metric names a PromQL expression reads. Quoted strings go first (label values such
 * as verdict="upstream_error" are not names), then every identifier of a known family;
 * histogram series are reported by their base name. `up` counts only as a selector
 * (`up{` or a bare `up` token), never inside a longer word.
 */
export function metricNamesIn(expr: string): Set<string> {
  const bare = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/'(?:[^'\\]|\\.)*'/g, "''")
  const names = new Set<string>()
  for (const m of bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const token = m[0]
    if (token === 'up') {
      names.add('up')
      continue
    }
    if (!FAMILY.test(token)) continue
    names.add(token.replace(HISTOGRAM_SERIES, ''))
  }
  return names
}

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs a command without a shell; never rejects (the exit code says what happened). */
export function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, env: opts.env, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

/** The absolute path of a tool on PATH, or null. */
export async function which(tool: string): Promise<string | null> {
  const r = await run('sh', ['-c', `command -v ${tool}`])
  return r.code === 0 ? r.stdout.trim() : null
}
