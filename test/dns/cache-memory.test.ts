/**
 * The cache's bounds hold in real memory (issue #17, items 9 and 10): `max_entries` at
 * its maximum costs nothing up front, and filling the cache to `max_bytes` through the
 * real UDP path grows heap + array buffers by at most 1.25 × max_bytes.
 */
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { CacheMemory } from '../../bench/cache-memory.js'
import { DnsCache, MAX_ENTRIES_LIMIT } from '../../src/dns/cache.js'
import { Daemon } from '../../src/daemon/daemon.js'

/** bench/cache-memory.ts in a fresh process with only the TypeScript loader (see cache-memory-child.ts). */
function measureInChild(count: number, maxBytes: number, maxEntries: number): Promise<CacheMemory> {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const script = fileURLToPath(new URL('./cache-memory-child.ts', import.meta.url))
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', ...loader, script, String(count), String(maxBytes), String(maxEntries)], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${err.message}\n${stderr}`))
      resolve(JSON.parse(stdout.trim().split('\n').pop()!) as CacheMemory)
    })
  })
}

t.test('filling the cache to max_bytes keeps real growth within 1.25 × max_bytes', async (t) => {
  const maxBytes = 4 << 20
  // More names than fit: the byte bound, not the entry count, ends the filling.
  const r = await measureInChild(20_000, maxBytes, 1_000_000)
  t.comment(JSON.stringify(r))
  t.ok(r.entries < 20_000, `the byte bound evicted (${r.entries} entries kept)`)
  const real = r.realBytesPerEntry * r.entries
  t.ok(real <= 1.25 * maxBytes, `heap + array buffers grew ${real} B for max_bytes ${maxBytes}`)
  t.ok(r.accountedBytesPerEntry >= 0.8 * r.realBytesPerEntry, `accounted ${r.accountedBytesPerEntry} B vs real ${r.realBytesPerEntry} B per entry`)
})

t.test('max_entries at its maximum preallocates nothing', async (t) => {
  const before = process.memoryUsage().heapUsed
  const c = new DnsCache({ maxEntries: MAX_ENTRIES_LIMIT, maxBytes: 1 << 20 })
  c.resize({ maxEntries: MAX_ENTRIES_LIMIT - 1, maxBytes: 1 << 20 })
  const grown = process.memoryUsage().heapUsed - before
  t.ok(grown < 8 << 20, `heap grew ${grown} B`)
  t.equal(c.size, 0)
})

t.test('the entry count bound still evicts the least recently used', async (t) => {
  const c = new DnsCache({ maxEntries: 2, maxBytes: 1 << 20 })
  const e = () => ({ wire: Buffer.alloc(20), ttlOffsets: new Uint16Array(0), ttls: new Uint32Array(0), rcode: 0, storedAt: Date.now(), lifetime: 60, hasPrivate: false, addresses: null })
  c.set('a', e())
  c.set('b', e())
  t.ok(c.get('a'), 'a used: b is now the oldest')
  c.set('c', e())
  t.equal(c.size, 2)
  t.ok(c.get('a'))
  t.equal(c.get('b'), undefined)
  t.ok(c.get('c'))
  c.set('c', e())
  t.equal(c.size, 2, 'replacing a key evicts nothing')
  t.ok(c.get('a'))
})

t.test('a daemon with dns.cache.max_entries 100000000 starts, reloads and stops within 64 MiB of heap', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-cache-'))
  const file = join(dir, 'egressd.yaml')
  writeFileSync(
    file,
    `dns:\n  listen: ["127.0.0.1:0"]\n  upstreams: ["127.0.0.1:9"]\n  cache: { max_entries: 100000000 }\nsni:\n  listen: []\nmetrics:\n  listen: null\nallow: [example.com]\n`,
  )
  const before = process.memoryUsage().heapUsed
  const d = new Daemon(file, { log: pino({ level: 'silent' }) })
  t.equal(d.config.dns.cache.maxEntries, MAX_ENTRIES_LIMIT, 'the documented maximum validates')
  await d.start()
  writeFileSync(file, `dns:\n  listen: ["127.0.0.1:0"]\n  upstreams: ["127.0.0.1:9"]\n  cache: { max_entries: 99999999 }\nsni:\n  listen: []\nmetrics:\n  listen: null\nallow: [example.com]\n`)
  const r = await d.reload()
  t.ok(r.ok, 'reloaded')
  const grown = process.memoryUsage().heapUsed - before
  await d.stop()
  t.ok(grown < 64 << 20, `heap grew ${grown} B`)
})
