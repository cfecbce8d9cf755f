/**
 * The splice and the connection's life around it: half-close, backpressure, timeouts,
 * reload, graceful stop, the connection bound, and 2 000 stalled connections.
 */
import t from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { fakeResolver, makeConfig, makePolicy, rawExchange, sniPolicy, startProxy, startRawUpstream } from './harness.js'
import { stalledPrefix } from './corpus.js'

const resolver = fakeResolver({ 'allowed.test': ['127.0.0.1'], 'later.test': ['127.0.0.1'] })
const hello = buildClientHello({ sni: 'allowed.test' })

/**
 * The i-th of many distinct loopback source addresses (all of 127/8 is local on Linux).
 * Tests of the global bound connect from one address each, so that per-client fair
 * shares (src/fair-share.ts: a client holding one connection is always within its share)
 * never bind before the cap does.
 */
function source(i: number): string {
  return `127.1.${Math.floor(i / 250)}.${1 + (i % 250)}`
}

function connect(port: number, localAddress?: string): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, localAddress })
  s.on('error', () => {})
  return once(s, 'connect').then(() => s)
}

/** Resolves when `cond()` holds, polling every 10 ms; rejects after `ms`. */
async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not reached')
    await new Promise((r) => setTimeout(r, 10))
  }
}

function closeCode(s: net.Socket): Promise<string | null> {
  return new Promise((resolve) => {
    let code: string | null = null
    s.on('error', (e: NodeJS.ErrnoException) => (code ??= e.code ?? 'error'))
    s.on('close', () => resolve(code))
  })
}

t.test('half-close: the client ends first, the upstream still answers', async (t) => {
  const upstream = await startRawUpstream({ reply: 'late reply', endAfterReply: true })
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test'], resolver })
  const out = await rawExchange(p.port, hello, { end: true })
  t.equal(upstream.received[0]!.ended, true, 'the upstream saw the client FIN')
  t.equal(out.received.toString(), 'late reply', 'the reply after the FIN reached the client')
  t.ok(out.ended, 'then the upstream FIN')
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 0)
  await p.stop()
  await upstream.close()
})

t.test('half-close: the upstream ends first, the client still sends', async (t) => {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = Buffer.alloc(0)
    s.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c])
      if (got.length === hello.length) s.end('bye') // FIN right after the hello
    })
    s.on('end', () => (received = got.subarray(hello.length).toString()))
  })
  let received = ''
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const p = await startProxy({ sni: { upstreamPort: (server.address() as net.AddressInfo).port }, allow: ['allowed.test'], resolver })
  const c = await connect(p.port)
  c.write(hello)
  let fromUpstream = ''
  c.on('data', (d: Buffer) => (fromUpstream += d))
  await once(c, 'end')
  t.equal(fromUpstream, 'bye')
  const closed = once(c, 'close')
  c.end('still here')
  await until(() => received === 'still here')
  t.pass('data after the upstream FIN reached it, then the client FIN')
  await closed
  await p.stop()
  server.close()
})

t.test('backpressure: a client that does not read stops the upstream, nothing piles up', async (t) => {
  const total = 32 * 1024 * 1024
  let upstreamSocket: net.Socket | null = null
  const server = net.createServer((s) => {
    upstreamSocket = s
    s.on('error', () => {})
    s.once('data', () => s.write(Buffer.alloc(total, 1)))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const p = await startProxy({ sni: { upstreamPort: (server.address() as net.AddressInfo).port }, allow: ['allowed.test'], resolver })
  const c = await connect(p.port)
  c.pause()
  c.write(hello)
  // Wait until the downstream count stops moving: the proxy has stopped reading.
  let last = -1
  await until(async () => {
    const now = await p.metric('egressd_sni_bytes_total{direction="downstream"}')
    const stable = now === last && now > 0
    last = now
    return stable
  }, 10_000)
  t.ok(last < total / 4, `the proxy holds ${(last / 1048576).toFixed(1)} MiB of ${total / 1048576} MiB while the client reads nothing`)
  t.ok(upstreamSocket!.writableLength > total / 2, 'the rest waits in the upstream sender')
  c.resume()
  let got = 0
  c.on('data', (d: Buffer) => (got += d.length))
  await until(() => got === total, 20_000)
  t.equal(got, total, 'everything arrives once the client reads')
  c.destroy()
  await p.stop()
  server.close()
})

t.test('slowloris: a hello that stalls after 10 bytes times out with a reset', async (t) => {
  const upstream = await startRawUpstream()
  const p = await startProxy({ sni: { upstreamPort: upstream.port, handshakeTimeoutMs: 300 }, allow: ['allowed.test'], resolver })
  const out = await rawExchange(p.port, stalledPrefix)
  t.equal(out.error, 'ECONNRESET')
  t.equal(await p.metric('egressd_sni_connections_total{verdict="timeout"}'), 1)
  t.equal(await p.metric('egressd_sni_hello_total{result="timeout"}'), 1)
  t.match(p.logs.find((l) => l.verdict === 'timeout'), { protocol: 'sni', reason: 'timeout', name: null })
  t.equal(upstream.accepted, 0)
  await p.stop()
  await upstream.close()
})

t.test('a client that closes mid-hello is counted malformed (incomplete)', async (t) => {
  const upstream = await startRawUpstream()
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test'], resolver })
  await rawExchange(p.port, stalledPrefix, { end: true })
  await until(async () => (await p.metric('egressd_sni_hello_total{result="incomplete"}')) === 1)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="malformed"}'), 1)
  await p.stop()
  await upstream.close()
})

t.test('idle timeout closes a quiet splice', async (t) => {
  const upstream = await startRawUpstream({ reply: 'hi', expect: hello.length })
  const p = await startProxy({ sni: { upstreamPort: upstream.port, idleTimeoutMs: 200 }, allow: ['allowed.test'], resolver })
  const c = await connect(p.port)
  const ended = once(c, 'end')
  let got = ''
  c.on('data', (d: Buffer) => (got += d))
  c.write(hello)
  await ended
  t.equal(got, 'hi', 'the splice worked, then went quiet and was closed')
  await until(() => upstream.received[0]!.ended)
  t.pass('the upstream side was closed too')
  c.destroy()
  await p.stop()
  await upstream.close()
})

t.test('reload: new policy for new connections, open splices untouched', async (t) => {
  const upstream = await startRawUpstream({ reply: 'hi', expect: 1 })
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test'], resolver })
  const c = await connect(p.port)
  let got = ''
  c.on('data', (d: Buffer) => (got += d))
  c.write(hello)
  await until(() => got === 'hi')
  p.proxy.update(sniPolicy(makeConfig(p.proxy.policy.settings), makePolicy(['later.test'])))
  t.equal((await rawExchange(p.port, hello)).error, 'ECONNRESET', 'allowed.test is blocked now')
  const later = await rawExchange(p.port, buildClientHello({ sni: 'later.test' }), { timeoutMs: 300 })
  t.equal(later.received.toString(), 'hi', 'later.test is allowed now')
  c.write('more')
  await until(() => upstream.received[0]!.bytes.length === hello.length + 4)
  t.pass('the connection opened before the reload still flows')
  c.destroy()
  await p.stop()
  await upstream.close()
})

t.test('stop: refuses new connections, resets hellos, gives splices the grace period', async (t) => {
  const upstream = await startRawUpstream({ reply: 'hi', expect: 1 })
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test'], resolver })
  const spliced = await connect(p.port)
  let got = ''
  spliced.on('data', (d: Buffer) => (got += d))
  spliced.write(hello)
  await until(() => got === 'hi')
  const stalled = await connect(p.port)
  stalled.write(stalledPrefix)
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 2)
  const stalledClosed = closeCode(stalled)
  const splicedClosed = closeCode(spliced)
  let stopped = false
  const stopping = p.proxy.stop(300).then(() => (stopped = true))
  t.equal(await stalledClosed, 'ECONNRESET', 'a connection still in its hello is reset at once')
  t.notOk(stopped, 'stop waits for the spliced connection')
  spliced.write('during grace')
  await until(() => upstream.received[0]!.bytes.length === hello.length + 'during grace'.length)
  t.pass('the splice still works during the grace period')
  await stopping
  t.equal(await splicedClosed, 'ECONNRESET', 'after the grace period the splice is reset')
  const refused = await new Promise<string>((resolve) => {
    net.connect({ host: '127.0.0.1', port: p.port }).on('error', (e: NodeJS.ErrnoException) => resolve(e.code!))
  })
  t.equal(refused, 'ECONNREFUSED', 'the listener is closed')
  await upstream.close()
})

t.test('start rejects when a listen address is taken, and closes what it opened', async (t) => {
  const taken = net.createServer()
  taken.listen(0, '127.0.0.1')
  await once(taken, 'listening')
  const port = (taken.address() as net.AddressInfo).port
  const first = await startProxy({ resolver })
  const { SniProxy } = await import('../../src/sni/proxy.js')
  const { Registry } = await import('prom-client')
  const { BlockedNames } = await import('../../src/metrics/blocked-names.js')
  const registry = new Registry()
  const proxy = new SniProxy(
    sniPolicy(makeConfig({ listen: [{ host: '127.0.0.1', port: 0, family: 4 }, { host: '127.0.0.1', port, family: 4 }] }), makePolicy([])),
    { log: (await import('pino')).pino({ level: 'silent' }), registry, blocked: new BlockedNames(registry, 1), resolver },
  )
  await t.rejects(proxy.start(), { code: 'ELISTEN', reason: 'EADDRINUSE', service: 'sni', address: `127.0.0.1:${port}` })
  t.same(proxy.boundAddresses, [], 'the first listener was closed again')
  await first.stop()
  taken.close()
})

t.test('max_connections: the excess is reset at once and counted', async (t) => {
  const upstream = await startRawUpstream()
  const p = await startProxy({ sni: { upstreamPort: upstream.port, maxConnections: 5 }, allow: ['allowed.test'], resolver })
  const held: net.Socket[] = []
  for (let i = 0; i < 5; i++) {
    const s = await connect(p.port, source(i))
    s.write(stalledPrefix)
    held.push(s)
  }
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 5)
  const extra = await Promise.all([0, 1, 2].map(() => rawExchange(p.port, hello)))
  t.same(extra.map((o) => o.error), ['ECONNRESET', 'ECONNRESET', 'ECONNRESET'])
  t.equal(await p.metric('egressd_sni_connections_total{verdict="overload"}'), 3)
  for (const s of held) s.destroy()
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 0)
  await p.stop()
  await upstream.close()
})

t.test('max_connections fair share: one client holds at most half, another is still served', async (t) => {
  const upstream = await startRawUpstream({ reply: 'pong', expect: hello.length, endAfterReply: true })
  const p = await startProxy({ sni: { upstreamPort: upstream.port, maxConnections: 8 }, allow: ['allowed.test'], resolver })
  const held: net.Socket[] = []
  const closes: Promise<string | null>[] = []
  for (let i = 0; i < 6; i++) {
    const s = net.connect({ host: '127.0.0.1', port: p.port, localAddress: '127.1.200.1' })
    closes.push(closeCode(s))
    // A reset may come before 'connect' is seen.
    await once(s, 'connect').then(
      () => s.write(stalledPrefix),
      () => {},
    )
    held.push(s)
  }
  await until(async () => (await p.metric('egressd_sni_connections_total{verdict="overload"}')) === 2)
  t.equal(await p.metric('egressd_sni_active_connections'), 4, 'the one client holds 4 of 8')
  const good = await rawExchange(p.port, hello)
  t.equal(good.received.toString(), 'pong', 'a client from another address is served')
  for (const s of held) s.destroy()
  const codes = await Promise.all(closes)
  t.equal(codes.filter((c) => c !== null).length, 2, 'the two beyond the share were reset')
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 0)
  await p.stop()
  await upstream.close()
})

t.test('2 000 stalled connections: bounded memory, the proxy still serves, excess counted', async (t) => {
  const N = 2000
  const EXTRA = 50
  const upstream = await startRawUpstream({ reply: 'pong', expect: hello.length, endAfterReply: true })
  // Room for the stalled ones and one good client at a time.
  const p = await startProxy({ sni: { upstreamPort: upstream.port, maxConnections: N + 1 }, allow: ['allowed.test'], resolver })
  global.gc?.()
  const heap0 = process.memoryUsage().heapUsed
  const rss0 = process.memoryUsage().rss
  const sockets: net.Socket[] = []
  const closes: Promise<string | null>[] = []
  const open = async (n: number): Promise<void> => {
    const deadline = Date.now() + 20_000
    for (let i = 0; i < n && Date.now() < deadline; i += 100) {
      const batch = Array.from({ length: Math.min(100, n - i) }, () => {
        const s = net.connect({ host: '127.0.0.1', port: p.port, localAddress: source(sockets.length) })
        closes.push(closeCode(s)) // before 'connect': a reset may come before the batch is done
        sockets.push(s)
        // An excess connection may be reset before its 'connect' is even seen.
        return once(s, 'connect').then(
          () => s.write(stalledPrefix),
          () => {},
        )
      })
      await Promise.all(batch)
    }
  }
  await open(N)
  t.equal(sockets.length, N, `${N} connections opened`)
  await until(async () => (await p.metric('egressd_sni_active_connections')) === N, 10_000)
  t.pass('the proxy holds all of them, each waiting for the rest of its hello')
  global.gc?.()
  const heapGrowth = (process.memoryUsage().heapUsed - heap0) / 1048576
  const rssGrowth = (process.memoryUsage().rss - rss0) / 1048576
  // Both ends of every connection live in this process; the bounds are generous on purpose.
  t.comment(`heap +${heapGrowth.toFixed(1)} MiB, rss +${rssGrowth.toFixed(1)} MiB for ${N} stalled connections (both ends in this process)`)
  t.ok(heapGrowth < 64, `heap growth ${heapGrowth.toFixed(1)} MiB < 64 MiB`)
  t.ok(rssGrowth < 256, `rss growth ${rssGrowth.toFixed(1)} MiB < 256 MiB`)

  const good = await rawExchange(p.port, hello)
  t.equal(good.received.toString(), 'pong', 'a good client is still served')
  await until(async () => (await p.metric('egressd_sni_active_connections')) === N)

  // One more stalled connection fills the last slot; everything beyond is reset at once.
  await open(1)
  await until(async () => (await p.metric('egressd_sni_active_connections')) === N + 1)
  await open(EXTRA)
  await until(async () => (await p.metric('egressd_sni_connections_total{verdict="overload"}')) === EXTRA, 10_000)
  t.pass(`${EXTRA} connections beyond max_connections counted as overload`)
  // Let every reset reach its client before the clean-up below: a socket destroyed here
  // before its RST is read closes without an error and would look unreset (seen once
  // in CI on Node 24: 49 of 50).
  await Promise.race([Promise.all(closes.slice(N + 1)), new Promise((r) => setTimeout(r, 5000))])

  for (const s of sockets) s.destroy()
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 0, 10_000)
  const codes = await Promise.all(closes)
  // The reset may surface as EPIPE when it beats the client's 10-byte write.
  const resets = codes.filter((c) => c !== null)
  t.equal(resets.length, EXTRA, 'exactly the excess saw a reset')
  t.ok(resets.every((c) => c === 'ECONNRESET' || c === 'EPIPE'), `as ECONNRESET or EPIPE: ${[...new Set(resets)].join(', ')}`)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="malformed"}'), N + 1, 'the stalled ones, closed mid-hello, count as malformed')
  await p.stop()
  await upstream.close()
})

t.test('a resolver that never answers: upstream_error after connect_timeout_ms', async (t) => {
  const upstream = await startRawUpstream()
  const hanging = { lookup: () => new Promise<never>(() => {}) }
  const p = await startProxy({ sni: { upstreamPort: upstream.port, connectTimeoutMs: 100 }, allow: ['allowed.test'], resolver: hanging })
  const out = await rawExchange(p.port, hello)
  t.equal(out.error, 'ECONNRESET')
  t.equal(await p.metric('egressd_sni_upstream_errors_total{reason="resolve"}'), 1)
  t.equal(await p.metric('egressd_sni_connections_total{verdict="upstream_error"}'), 1)
  await p.stop()
  await upstream.close()
})

t.test('every listen address is served, IPv6 included', async (t) => {
  const upstream = await startRawUpstream({ reply: 'pong', expect: hello.length, endAfterReply: true })
  const p = await startProxy({
    sni: {
      upstreamPort: upstream.port,
      listen: [
        { host: '127.0.0.1', port: 0, family: 4 },
        { host: '::1', port: 0, family: 6 },
      ],
    },
    allow: ['allowed.test'],
    resolver,
  })
  const [v4, v6] = p.proxy.boundAddresses
  t.equal(v4!.address, '127.0.0.1')
  t.equal(v6!.address, '::1')
  const out = await new Promise<string>((resolve) => {
    const s = net.connect({ host: '::1', port: v6!.port })
    let got = ''
    s.on('data', (d: Buffer) => (got += d))
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))
    s.on('close', () => resolve(got))
    s.write(hello)
  })
  t.equal(out, 'pong', 'a client on ::1 reached the upstream')
  t.equal(p.logs.length, 0, 'nothing logged: no block, no listener error')
  await p.stop()
  await upstream.close()
})

t.test('bytes beyond the hello buffer in one chunk are forwarded too, exactly', async (t) => {
  const tail = Buffer.alloc(5000, 0x17)
  const all = Buffer.concat([hello, tail])
  const upstream = await startRawUpstream({ reply: 'ok', expect: all.length, endAfterReply: true })
  const p = await startProxy({ sni: { upstreamPort: upstream.port, maxClientHelloBytes: 1024 }, allow: ['allowed.test'], resolver })
  // 10 bytes first (the proxy buffers them), then one write far larger than its 1029-byte
  // buffer. The pause only makes separate reads likely; the assertions hold either way.
  const c = await connect(p.port)
  let got = ''
  c.on('data', (d: Buffer) => (got += d))
  c.write(all.subarray(0, 10))
  await new Promise((r) => setTimeout(r, 100))
  c.write(all.subarray(10))
  await until(() => got === 'ok')
  c.destroy()
  t.ok(upstream.received[0]!.bytes.equals(all), 'the upstream got every byte in order')
  await p.stop()
  await upstream.close()
})

t.test('a reset on either side of a splice resets the other', async (t) => {
  const peers: net.Socket[] = []
  const server = net.createServer((s) => {
    peers.push(s)
    s.once('data', () => s.write('hi'))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const p = await startProxy({ sni: { upstreamPort: (server.address() as net.AddressInfo).port }, allow: ['allowed.test'], resolver })
  for (const side of ['client', 'upstream'] as const) {
    const c = await connect(p.port)
    const got = once(c, 'data')
    c.write(hello)
    await got
    const upstreamSide = peers.at(-1)!
    const clientClosed = closeCode(c)
    const upstreamClosed = closeCode(upstreamSide)
    if (side === 'client') c.resetAndDestroy()
    else upstreamSide.resetAndDestroy()
    const other = side === 'client' ? await upstreamClosed : await clientClosed
    t.equal(other, 'ECONNRESET', `${side} reset → the other side saw a reset`)
  }
  await p.stop()
  server.close()
})

t.test('a client that leaves while the name resolves: counted allowed, nothing dialled', async (t) => {
  const upstream = await startRawUpstream()
  let answer!: () => void
  const slow = {
    lookup: () => new Promise<{ v4: string[]; v6: string[]; ttl: number }>((resolve) => (answer = () => resolve({ v4: ['127.0.0.1'], v6: [], ttl: 60 }))),
  }
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test'], resolver: slow })
  const c = await connect(p.port)
  c.write(hello)
  await until(() => answer !== undefined)
  // A reset: a FIN alone is a half-close, and the proxy rightly keeps dialling for it.
  c.resetAndDestroy()
  await until(async () => (await p.metric('egressd_sni_active_connections')) === 0)
  answer()
  await new Promise((r) => setTimeout(r, 50))
  t.equal(await p.metric('egressd_sni_connections_total{verdict="allowed"}'), 1)
  t.equal(upstream.accepted, 0, 'the late answer dialled nothing')
  await p.stop()
  await upstream.close()
})

t.test('addresses the resolver already holds: dialled at once, no lookup, the hello replayed', async (t) => {
  const upstream = await startRawUpstream({ expect: hello.length, reply: 'pong', endAfterReply: true })
  const lookups: string[] = []
  const asked: string[] = []
  const warm = {
    lookup: async (name: string) => {
      lookups.push(name)
      throw Object.assign(new Error('lookup must not be called'), { code: 'ESERVFAIL' })
    },
    cachedAddresses: (name: string) => (asked.push(name), { v4: ['127.0.0.1'], v6: [] }),
  }
  const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['allowed.test'], resolver: warm })
  const out = await rawExchange(p.port, hello, { end: true })
  t.equal(out.received.toString(), 'pong')
  t.same(asked, ['allowed.test'])
  t.same(lookups, [], 'no lookup')
  t.ok(Buffer.from(hello).equals(upstream.received[0]!.bytes), 'the exact hello')
  t.equal(await p.metric('egressd_sni_connections_total{verdict="allowed"}'), 1)
  await p.stop()
  await upstream.close()
})
