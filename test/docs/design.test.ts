import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

/**
 * docs/design.md is the contract "describing what was really built": its metric table
 * names every series the code registers, and its layout names every folder of the
 * repository and every entry directly under src/. A metric or a module added without
 * its line in the contract fails here.
 */
const design = readFileSync('docs/design.md', 'utf8')

function section(title: string): string {
  const start = design.indexOf(`\n## ${title}\n`)
  if (start < 0) throw new Error(`docs/design.md has no "## ${title}" section`)
  const end = design.indexOf('\n## ', start + 1)
  return design.slice(start, end < 0 ? undefined : end)
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name))
}

t.test('every metric registered in src/ is in the Metrics section', async (t) => {
  const names = new Set<string>()
  for (const file of tsFiles('src')) {
    for (const m of readFileSync(file, 'utf8').matchAll(/['"`]egressd_([a-z0-9_]+)['"`]/g)) names.add(m[1]!)
  }
  t.ok(names.size > 40, `${names.size} metric names found in src/`)
  const metrics = section('Metrics')
  const missing = [...names].filter((n) => !metrics.includes(`\`${n}\``)).sort()
  t.same(missing, [], `not in docs/design.md's metric table: ${missing.join(', ')}`)
})

t.test('the Layout section names every top-level folder and every entry under src/', async (t) => {
  const layout = section('Layout')
  const tracked = execFileSync('git', ['ls-files'], { encoding: 'utf8' }).split('\n').filter((f) => f.includes('/'))
  const top = [...new Set(tracked.map((f) => f.split('/')[0]!))]
  const src = readdirSync('src').filter((e) => e !== 'README.md').map((e) => `src/${e}`)
  const missing = [...top.map((d) => `${d}/`), ...src].filter((p) => !layout.includes(p)).sort()
  t.same(missing, [], `not in docs/design.md's layout: ${missing.join(', ')}`)
})
