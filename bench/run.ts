/**
 * `npm run bench -- NAME [args…]`: runs bench/NAME.ts (compiled to build/bench/NAME.js).
 * Every benchmark prints one JSON object per line, then a human table.
 */
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.js') && f !== 'run.js' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3))
  .sort()

const [name, ...args] = process.argv.slice(2)
if (!name || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- NAME [args…]\nbenchmarks: ${available.join(', ') || '(none built)'}\n`)
  process.exit(name ? 2 : 0)
}
const mod = (await import(`./${name}.js`)) as { run(args: string[]): Promise<void> }
await mod.run(args)
