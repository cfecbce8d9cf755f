import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'

/**
 * Each shipped preset cites the vendor's public page it was taken from: its title in
 * quotes, its https address, and the date the list was taken (docs/design.md, "policy
 * semantics": presets). An operator comparing a preset with the vendor's current page
 * needs all three.
 */
const DIR = 'config/presets'
const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml'))

t.ok(files.length >= 4, `${files.length} presets`)
for (const f of files) {
  t.test(f, async (t) => {
    const source = (parse(readFileSync(join(DIR, f), 'utf8')) as { source?: unknown }).source
    t.type(source, 'string', 'has a source: text')
    const s = String(source)
    t.match(s, /"[^"]{8,}"/, 'the page title, quoted')
    t.match(s, /https:\/\/[a-z0-9.-]+\.[a-z]{2,}\/\S+/, 'the page address')
    t.match(s, /taken 20\d\d-\d\d-\d\d/, 'the date the list was taken')
  })
}
