import t from 'tap'
import { DnsCache, type StoredAnswer } from '../../src/dns/cache.js'
import { RateLimiter } from '../../src/dns/rate-limiter.js'
import { parseQuery, QueryInfo } from '../../src/dns/wire.js'
import { query } from './helpers.js'

function entry(bytes: number, lifetime: number, storedAt: number): StoredAnswer {
  return {
    wire: Buffer.alloc(bytes),
    ttlOffsets: new Uint16Array(0),
    ttls: new Uint32Array(0),
    rcode: 0,
    storedAt,
    lifetime,
    hasPrivate: false,
    addresses: null,
  }
}

function keyOf(cache: DnsCache, name: string, type = 'A', dnssec = false): string {
  const q = query(name, type, { dnssec })
  const info = new QueryInfo()
  parseQuery(q, q.length, info)
  return cache.key(q, info)
}

t.test('key: case-insensitive name; type, class and DO distinguish', async (t) => {
  const c = new DnsCache({ maxEntries: 10, maxBytes: 1e6 })
  t.equal(keyOf(c, 'Example.COM'), keyOf(c, 'example.com'))
  t.not(keyOf(c, 'example.com', 'A'), keyOf(c, 'example.com', 'AAAA'))
  t.not(keyOf(c, 'example.com'), keyOf(c, 'example.com', 'A', true))
  t.not(keyOf(c, 'ab.c'), keyOf(c, 'a.bc'), 'label boundaries are part of the key')
})

t.test('expiry on the injected clock, no timers', async (t) => {
  let now = 1_000_000
  const c = new DnsCache({ maxEntries: 10, maxBytes: 1e6 }, () => now)
  c.set('k', entry(10, 30, now))
  c.set('zero', entry(10, 0, now))
  t.equal(c.size, 1, 'lifetime 0 is not stored')
  now += 29_999
  t.ok(c.get('k'))
  now += 1
  t.equal(c.get('k'), undefined)
  t.equal(c.size, 0, 'expired entry removed on get')
})

t.test('bounded by entries and by bytes', async (t) => {
  const byCount = new DnsCache({ maxEntries: 3, maxBytes: 1e9 })
  for (let i = 0; i < 10; i++) byCount.set(`k${i}`, entry(10, 60, Date.now()))
  t.equal(byCount.size, 3)
  t.ok(byCount.get('k9'))
  t.equal(byCount.get('k0'), undefined)
  const byBytes = new DnsCache({ maxEntries: 1000, maxBytes: 10_000 })
  for (let i = 0; i < 100; i++) byBytes.set(`k${i}`, entry(1000, 60, Date.now()))
  t.ok(byBytes.bytes <= 10_000, `bytes ${byBytes.bytes}`)
  t.ok(byBytes.size < 10)
  byBytes.resize({ maxEntries: 5, maxBytes: 10_000 })
  t.equal(byBytes.size, 0, 'new limits start a new cache')
})

t.test('rate limiter: burst then refill, bounded table', async (t) => {
  let now = 0
  const rl = new RateLimiter(10, 5, 100, () => now)
  let ok = 0
  for (let i = 0; i < 20; i++) if (rl.take('1.2.3.4')) ok++
  t.equal(ok, 5, 'burst')
  now += 200 // 2 tokens at 10 qps
  ok = 0
  for (let i = 0; i < 20; i++) if (rl.take('1.2.3.4')) ok++
  t.equal(ok, 2)
  t.ok(rl.take('5.6.7.8'), 'other clients unaffected')
  for (let i = 0; i < 1000; i++) rl.take(`10.0.${i >> 8}.${i & 255}`)
  t.equal(rl.size, 100)
})
