/**
 * Run by cache-memory.test.ts in a child process of its own: inside the test runner's
 * process (its async-resource tracking and source maps) the same fill measured ~2.5 MB
 * more heap, which is the runner's, not the cache's.
 */
import { measureCache } from '../../bench/cache-memory.js'

const [count, maxBytes, maxEntries] = process.argv.slice(2).map(Number)
process.stdout.write(JSON.stringify(await measureCache(count!, maxBytes!, maxEntries!)) + '\n')
