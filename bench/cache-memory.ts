/**
 * `npm run bench -- cache-memory [ENTRIES]`: what a DNS cache entry really costs.
 *
 * A DnsService in this process, with a fake upstream (bench/dns/fake-upstream.ts, also in
 * this process) answering every name with one A record, is asked ENTRIES distinct names
 * over UDP (default 100 000, 256 in flight), so every entry goes through the real path:
 * datagram in, upstream exchange, store, answer rendered. Then, after two full GCs, it
 * prints the growth of heapUsed, arrayBuffers and RSS per cached entry next to what the
 * cache accounts (`egressd_dns_cache_bytes` / entries). Run with --expose-gc (npm run
 * bench does; without it the script turns it on itself).
 */
import dgram from 'node:dgram'
import v8 from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Registry } from 'prom-client'
import { pino } from 'pino'
import { parseConfig } from '../src/config/load.js'
import { compileConfig } from '../src/daemon/compiled-config.js'
import { DnsService } from '../src/dns/service.js'
import { BlockedNames } from '../src/metrics/blocked-names.js'
import { startFakeUpstream } from './dns/fake-upstream.js'

const WINDOW = 256

/** A full GC, with or without --expose-gc (tests run without it). */
function gc(): void {
  let g = (globalThis as { gc?: () => void }).gc
  if (g === undefined) {
    v8.setFlagsFromString('--expose-gc')
    g = runInNewContext('gc') as () => void
  }
  g()
  g()
}

function query(id: number, name: string): Buffer {
  const labels = name.split('.')
  const parts: Buffer[] = [Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])]
  for (const l of labels) parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'))
  parts.push(Buffer.from([0, 0, 1, 0, 1]))
  return Buffer.concat(parts)
}

/** Asks `count` distinct names `${prefix}${i}.cache.bench`, WINDOW in flight; resends what a lost datagram left. */
function fill(client: dgram.Socket, port: number, count: number, prefix: string): Promise<void> {
  let sent = 0
  let answered = 0
  const inFlight = new Map<number, number>()
  return new Promise<void>((resolve) => {
    const send = (): void => {
      while (sent < count && inFlight.size < WINDOW) {
        const id = sent & 0xffff
        inFlight.set(id, sent)
        client.send(query(id, `${prefix}${sent}.cache.bench`), port, '127.0.0.1')
        sent++
      }
    }
    const retry = setInterval(() => {
      for (const [id, i] of inFlight) client.send(query(id, `${prefix}${i}.cache.bench`), port, '127.0.0.1')
    }, 1000)
    const onMessage = (msg: Buffer): void => {
      const id = (msg[0]! << 8) | msg[1]!
      if (!inFlight.delete(id)) return
      answered++
      if (answered < count) return send()
      clearInterval(retry)
      client.off('message', onMessage)
      resolve()
    }
    client.on('message', onMessage)
    send()
  })
}

export interface CacheMemory {
  entries: number
  accountedBytesPerEntry: number
  heapBytesPerEntry: number
  arrayBufferBytesPerEntry: number
  realBytesPerEntry: number
  rssBytesPerEntry: number
  seconds: number
}

/** Fills a fresh service's cache with `count` entries and measures; maxBytes defaults to "no byte bound". */
export async function measureCache(count: number, maxBytes = 2 ** 40, maxEntries = count): Promise<CacheMemory> {
  const up = await startFakeUpstream()
  const yaml = `dns:
  listen: ["127.0.0.1:0"]
  upstreams: ["127.0.0.1:${up.port}"]
  rebind_protection: false
  rate_limit: { qps: 0 }
  max_pending_upstream: 4096
  cache: { max_entries: ${maxEntries}, max_bytes: ${maxBytes} }
allow: ["*.cache.bench"]
`
  const compiled = compileConfig(parseConfig('cache-memory.yaml', yaml).config)
  const registry = new Registry()
  const svc = new DnsService(compiled.dns, { log: pino({ level: 'silent' }), registry, blocked: new BlockedNames(registry, 10) })
  await svc.start()
  const port = svc.boundAddresses.udp[0]!.port
  const client = dgram.createSocket('udp4')
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()))

  // Warm-up: code compiled, pools and socket buffers allocated, so the growth measured
  // below is the entries' (a cold run of 6 000 entries charged ~2 MB of this to them).
  await fill(client, port, 2_000, 'warm')
  svc.resolver.cache.clear()
  gc()
  const before = process.memoryUsage()
  const started = performance.now()
  await fill(client, port, count, 'n')
  const seconds = (performance.now() - started) / 1000
  client.close()
  gc()
  const after = process.memoryUsage()
  const entries = svc.resolver.cache.size
  const accounted = svc.resolver.cache.bytes
  await svc.stop()
  await up.stop()
  const heap = after.heapUsed - before.heapUsed
  const ab = after.arrayBuffers - before.arrayBuffers
  return {
    entries,
    accountedBytesPerEntry: Math.round(accounted / entries),
    heapBytesPerEntry: Math.round(heap / entries),
    arrayBufferBytesPerEntry: Math.round(ab / entries),
    realBytesPerEntry: Math.round((heap + ab) / entries),
    rssBytesPerEntry: Math.round((after.rss - before.rss) / entries),
    seconds: Math.round(seconds * 10) / 10,
  }
}

export async function run(args: string[]): Promise<void> {
  const count = Number(args[0] ?? 100_000)
  const r = await measureCache(count)
  process.stdout.write(JSON.stringify({ bench: 'cache-memory', ...r }) + '\n')
  process.stdout.write(
    `${r.entries} entries in ${r.seconds} s: accounted ${r.accountedBytesPerEntry} B/entry; ` +
      `real ${r.realBytesPerEntry} B/entry (heap ${r.heapBytesPerEntry} + array buffers ${r.arrayBufferBytesPerEntry}); RSS ${r.rssBytesPerEntry} B/entry\n`,
  )
}
