import { readFileSync } from 'node:fs'

let cached: string | null = null

/** The package's version, read once from package.json (two levels above dist/ and src/). */
export function version(): string {
  cached ??= (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
  return cached
}
