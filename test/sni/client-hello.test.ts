import t from 'tap'
import fc from 'fast-check'
import { ClientHelloReader, readClientHello, type HelloResult } from '../../src/sni/client-hello.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { corpus } from './corpus.js'

const MAX = 16_384

/** Feeds `bytes` in chunks of the given sizes (cycled) into one reader, as the proxy does. */
function feed(bytes: Uint8Array, sizes: number[], max = MAX): { result: HelloResult; fedWhenDone: number } {
  const reader = new ClientHelloReader(max)
  const buf = new Uint8Array(bytes.length)
  let length = 0
  let i = 0
  while (length < bytes.length) {
    const n = Math.min(sizes[i++ % sizes.length]!, bytes.length - length)
    buf.set(bytes.subarray(length, length + n), length)
    length += n
    const result = reader.read(buf, length)
    if (result.kind !== 'continue') return { result, fedWhenDone: length }
  }
  return { result: { kind: 'continue' }, fedWhenDone: length }
}

function summary(r: HelloResult): object {
  if (r.kind === 'done') return { kind: r.kind, serverName: r.serverName, ech: r.ech }
  if (r.kind === 'error') return { kind: r.kind, reason: r.reason }
  return { kind: r.kind }
}

t.test('every corpus case, whole, byte by byte and in odd chunks', async (t) => {
  for (const c of corpus) {
    const expected = c.expect.kind === 'done' ? { kind: 'done', serverName: c.expect.serverName, ech: c.expect.ech ?? false } : c.expect
    const whole = readClientHello(c.bytes, c.bytes.length, MAX)
    t.same(summary(whole), expected, `${c.name}: whole`)
    t.same(summary(feed(c.bytes, [1]).result), expected, `${c.name}: 1-byte chunks`)
    t.same(summary(feed(c.bytes, [7, 1, 300]).result), expected, `${c.name}: mixed chunks`)
  }
})

t.test('helloBytes ends at the record that completed the hello', async (t) => {
  const hello = buildClientHello({ sni: 'a.test', recordSplit: [20, 20] })
  const tail = Uint8Array.from([23, 3, 3, 0, 1, 9])
  const both = new Uint8Array(hello.length + tail.length)
  both.set(hello)
  both.set(tail, hello.length)
  const r = readClientHello(both, both.length, MAX)
  t.equal(r.kind, 'done')
  if (r.kind === 'done') t.equal(r.helloBytes, hello.length)
  // Fed byte by byte, the verdict comes exactly with the hello's last byte.
  t.equal(feed(both, [1]).fedWhenDone, hello.length)
})

t.test('every proper prefix of a hello is continue', async (t) => {
  for (const bytes of [buildClientHello({ sni: 'a.test' }), buildClientHello({ sni: 'a.test', pq: true, recordSplit: [3, 1, 900] })]) {
    let continues = 0
    for (let n = 0; n < bytes.length; n++) if (readClientHello(bytes, n, MAX).kind === 'continue') continues++
    t.equal(continues, bytes.length)
    t.equal(readClientHello(bytes, bytes.length, MAX).kind, 'done')
  }
})

t.test('lengths that promise more bytes wait for them', async (t) => {
  const longRecord = buildClientHello({ sni: 'a.test', lie: { field: 'record', delta: 20 } })
  t.equal(readClientHello(longRecord, longRecord.length, MAX).kind, 'continue')
  const longHandshake = buildClientHello({ sni: 'a.test', lie: { field: 'handshake', delta: 20 } })
  t.equal(readClientHello(longHandshake, longHandshake.length, MAX).kind, 'continue')
})

t.test('the first bytes decide early for HTTP, SSLv2 and other record types', async (t) => {
  t.same(summary(readClientHello(Uint8Array.from([0x47]), 1, MAX)), { kind: 'error', reason: 'not_tls' })
  t.same(summary(readClientHello(Uint8Array.from([0x16, 0x02]), 2, MAX)), { kind: 'error', reason: 'not_tls' })
  t.same(summary(readClientHello(Uint8Array.from([0x80]), 1, MAX)), { kind: 'error', reason: 'sslv2' })
  t.same(summary(readClientHello(Uint8Array.from([0x17]), 1, MAX)), { kind: 'error', reason: 'not_handshake' })
  t.same(summary(readClientHello(Uint8Array.from([0x16, 0x03, 0x01]), 3, MAX)), { kind: 'continue' })
})

t.test('maxBytes: the bound is exact and announced sizes fail before their bytes arrive', async (t) => {
  const max = 1024
  // Find the padding that makes the handshake message exactly `max` bytes.
  const base = buildClientHello({ sni: 'a.test', extraExtensionBytes: 0 })
  const pad = max - (base.length - 5)
  const exact = buildClientHello({ sni: 'a.test', extraExtensionBytes: pad })
  t.equal(exact.length - 5, max)
  t.equal(readClientHello(exact, exact.length, max).kind, 'done')
  const over = buildClientHello({ sni: 'a.test', extraExtensionBytes: pad + 1 })
  t.same(summary(readClientHello(over, 9, max)), { kind: 'error', reason: 'too_large' }, 'handshake header alone is enough')
  // Split in records, the records' headers count too, beyond one header of slack.
  const split = buildClientHello({ sni: 'a.test', extraExtensionBytes: pad - 2, recordSplit: [200, 200, 200] })
  t.same(summary(readClientHello(split, split.length, max)), { kind: 'error', reason: 'too_large' })
  const bigRecord = Uint8Array.from([22, 3, 1, 0x10, 0x00])
  t.same(summary(readClientHello(bigRecord, 5, max)), { kind: 'error', reason: 'too_large' }, 'record header alone is enough')
})

t.test('names: lowercase, one trailing dot stripped, offending names reported', async (t) => {
  const r = readClientHello(buildClientHello({ sni: 'WWW.Example.COM.' }), 200, MAX)
  t.equal(r.kind === 'done' && r.serverName, 'www.example.com')
  const ip = readClientHello(buildClientHello({ sni: '10.0.0.1' }), 200, MAX)
  t.equal(ip.kind === 'error' && ip.name, '10.0.0.1')
  const nul = buildClientHello({ sni: new TextEncoder().encode('a\0"b\\.test') })
  const bad = readClientHello(nul, nul.length, MAX)
  t.equal(bad.kind === 'error' && bad.name, 'a\\000\\034b\\092.test', 'escaped \\DDD as on the DNS side')
  const names63 = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(61)].join('.')
  t.equal(names63.length, 253)
  const longHello = buildClientHello({ sni: names63 + '.' })
  const long = readClientHello(longHello, longHello.length, MAX)
  t.equal(long.kind === 'done' && long.serverName, names63, '253 bytes plus the trailing dot is allowed')
})

t.test('property: any record split and any TCP chunking give the whole-buffer result', async (t) => {
  const seed = Number(process.env.SEED ?? Date.now() % 1_000_000)
  t.comment(`seed ${seed}`)
  let fragmented = 0
  fc.assert(
    fc.property(
      fc.stringMatching(/^[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}$/),
      fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 6 }),
      fc.array(fc.integer({ min: 1, max: 600 }), { minLength: 1, maxLength: 5 }),
      fc.boolean(),
      (name, split, chunks, pq) => {
        const bytes = buildClientHello({ sni: name, recordSplit: split, pq })
        if (split.length > 0 && split[0]! < bytes.length - 5) fragmented++
        const expected = readClientHello(bytes, bytes.length, MAX)
        const got = feed(bytes, chunks).result
        const isNumeric = /^(\d+|0x[0-9a-f]+)$/.test(name.slice(name.lastIndexOf('.') + 1))
        return (
          JSON.stringify(summary(got)) === JSON.stringify(summary(expected)) &&
          (isNumeric ? got.kind === 'error' && got.reason === 'ip_literal' : got.kind === 'done' && got.serverName === name)
        )
      },
    ),
    { seed, numRuns: 400 },
  )
  t.ok(fragmented > 50, `fragmented hellos were exercised (${fragmented})`)
})

t.test('property: mutated hellos never throw and never yield a name outside the alphabet', async (t) => {
  const seed = Number(process.env.SEED ?? Date.now() % 1_000_000)
  t.comment(`seed ${seed}`)
  const bases = [
    buildClientHello({ sni: 'a.test', alpn: ['h2'] }),
    buildClientHello({ sni: 'a.test', recordSplit: [10, 3, 50] }),
    buildClientHello({ sni: ['a.test', 'b.test'] }),
  ]
  const kinds = new Map<string, number>()
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: bases.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      fc.nat(),
      (which, edits, cut) => {
        const bytes = Uint8Array.from(bases[which]!)
        for (const [at, value] of edits) bytes[at % bytes.length] = value
        const length = cut % 3 === 0 ? cut % (bytes.length + 1) : bytes.length
        const r = readClientHello(bytes, length, 512)
        const key = r.kind === 'error' ? r.reason : r.kind
        kinds.set(key, (kinds.get(key) ?? 0) + 1)
        return r.kind !== 'done' || /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(r.serverName)
      },
    ),
    { seed, numRuns: 3000 },
  )
  t.comment(JSON.stringify(Object.fromEntries(kinds)))
  t.ok((kinds.get('done') ?? 0) > 0 && (kinds.get('bad_length') ?? 0) > 0 && (kinds.get('continue') ?? 0) > 0, 'the case mix was exercised')
})
