/**
 * Issue #13 item 9: the README says what the tests need. The Debian packages .ci/run
 * installs are the list of what the tests drive; each must be named in the README's
 * test section, so a tool added to CI is not missing from what a contributor reads.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'

const ci = readFileSync('.ci/run', 'utf8')
const readme = readFileSync('README.md', 'utf8')

t.test('every Debian package .ci/run installs for the tests is named in the README, with what runs without root', async (t) => {
  const loop = /for pair in ([^;]+); do/.exec(ci)
  t.ok(loop, '.ci/run has its probe:package list')
  const packages = [...new Set(loop![1]!.replace(/\\\n/g, ' ').trim().split(/\s+/).map((pair) => pair.slice(pair.lastIndexOf(':') + 1)))]
  t.ok(packages.length >= 15, `${packages.length} packages`)
  const start = readme.indexOf('The tests drive')
  const end = readme.indexOf('## Supported runtimes')
  t.ok(start >= 0 && end > start, 'the README has its test section')
  const section = readme.slice(start, end)
  for (const p of packages) t.match(section, new RegExp('`' + p.replace(/[.+]/g, '\\$&') + '`'), `README names \`${p}\``)
  t.match(section, /What needs root/)
})
