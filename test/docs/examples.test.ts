import t from 'tap'
import { readFileSync } from 'node:fs'
import { ConfigErrors } from '../../src/errors.js'
import { parseConfig } from '../../src/config/load.js'
import { allGroups } from '../../src/config/groups.js'
import { GroupSet } from '../../src/policy/groups.js'

/**
 * Every egressd configuration shown in the documentation loads: an operator pasting
 * an example must not meet an error. Blocks that configure other programs (Prometheus)
 * are recognised by their keys and left out.
 */
const DOCS = ['README.md', 'docs/gateway.md', 'docs/groups.md', 'docs/design.md', 'docs/container.md', 'config/egressd.yaml',
  // The configurations the install paths ship: the Debian conffile and the deploy examples.
  'packaging/deb/egressd.yaml', 'deploy/egressd.yaml', 'deploy/balena/egressd.yaml']

function yamlBlocks(file: string): { line: number; text: string }[] {
  const text = readFileSync(file, 'utf8')
  if (file.endsWith('.yaml')) return [{ line: 1, text }]
  const blocks: { line: number; text: string }[] = []
  const re = /^```yaml\n([\s\S]*?)^```$/gm
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    blocks.push({ line: text.slice(0, m.index).split('\n').length, text: m[1]! })
  }
  return blocks
}

let checked = 0
for (const file of DOCS) {
  for (const block of yamlBlocks(file)) {
    if (/^\s*(scrape_configs|global|rule_files):/m.test(block.text)) continue
    checked++
    t.test(`${file}:${block.line} is a valid configuration`, async (t) => {
      try {
        const { config } = parseConfig(`${file}:${block.line}`, block.text, { resolvConf: '/dev/null' })
        t.ok(GroupSet.compile(allGroups(config)).groups.length >= 1, 'its policy compiles')
      } catch (e) {
        if (e instanceof ConfigErrors) t.fail(e.message)
        else throw e
      }
    })
  }
}

t.test('the documentation has examples to check', async (t) => {
  t.ok(checked >= 4, `${checked} example configurations checked`)
})
