/**
 * The status page's HTTP side in-process on 127.0.0.1:0: event-stream bounds (client
 * count, a slow reader dropped), resuming after a sequence number, and access by the
 * configured listener (open, bearer token, off, disabled).
 */
import t, { type Test } from 'tap'
import { get as httpGet } from 'node:http'
import { connect, type Socket } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Config, UiConfig } from '../../src/config/types.js'
import { compileConfig } from '../../src/daemon/compiled-config.js'
import type { DecisionEvent } from '../../src/log/decision.js'
import { MetricsServer } from '../../src/metrics/server.js'
import { UI_DEFAULTS } from '../../src/ui/access.js'
import { StatusPage } from '../../src/ui/status-page.js'
import { hostPort, makeConfig } from '../dns/helpers.js'
import { createHash } from 'node:crypto'

const TOKEN = 'a'.repeat(20) + '-secret'
const sha = (s: string): string => createHash('sha256').update(s).digest('hex')

function config(listen: string, ui: Partial<UiConfig> = {}): Config {
  return { ...makeConfig(), metrics: { listen: hostPort(listen), blockedNamesMax: 10, blockedClientsMax: 10 }, ui: { ...UI_DEFAULTS, ...ui } }
}

/** A StatusPage on a real listener bound to 127.0.0.1:0, whatever address the config names (access follows the config). */
async function serve(t: Test, cfg: Config, now?: () => number) {
  const registry = new Registry()
  const page = new StatusPage(compileConfig(cfg), {
    now,
    registry,
    log: pino({ level: 'silent' }),
    sources: { listeners: () => ({ dns: [], sni: [], metrics: null }), firewall: () => null },
  })
  const http = new MetricsServer(registry, hostPort('127.0.0.1:0'), page.routes())
  await http.start()
  await page.start()
  t.teardown(async () => {
    await page.stop()
    await http.stop()
  })
  return { page, base: `http://127.0.0.1:${http.address!.port}` }
}

const blocked = (name: string): DecisionEvent => ({
  protocol: 'sni', client: '10.1.2.3', name, verdict: 'blocked', rule: null, reason: 'not_allowed', group: 'default', mode: 'enforce',
})

/** A raw HTTP client that asks for the stream and then reads nothing (or everything). */
function rawStream(base: string, read: boolean): Promise<{ sock: Socket; head: Promise<string> }> {
  const url = new URL(base)
  return new Promise((resolve) => {
    const sock = connect(Number(url.port), '127.0.0.1', () => {
      sock.write('GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
      let text = ''
      const head = new Promise<string>((done) => {
        const onData = (b: Buffer): void => {
          text += b.toString('latin1')
          if (text.includes('\r\n\r\n')) {
            if (!read) {
              sock.off('data', onData)
              sock.pause()
            }
            done(text.slice(0, text.indexOf('\r\n')))
          }
        }
        sock.on('data', onData)
      })
      resolve({ sock, head })
    })
    sock.on('error', () => {})
  })
}

const waitFor = async (cond: () => boolean, ms = 5000): Promise<boolean> => {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
  return cond()
}

t.test('at most ui.clients_max streams; one more is told to come back later', async (t) => {
  const { page, base } = await serve(t, config('127.0.0.1:9153', { clientsMax: 2 }))
  const a = await rawStream(base, true)
  const b = await rawStream(base, true)
  t.equal(await a.head, 'HTTP/1.1 200 OK')
  t.equal(await b.head, 'HTTP/1.1 200 OK')
  const third = await fetch(`${base}/api/stream`)
  t.equal(third.status, 503)
  t.equal(third.headers.get('retry-after'), '10')
  t.equal(page.hub.stats.refused, 1)
  a.sock.destroy()
  t.ok(await waitFor(() => page.hub.size === 1), 'a closed stream frees its place')
  const c = await rawStream(base, true)
  t.equal(await c.head, 'HTTP/1.1 200 OK')
  b.sock.destroy()
  c.sock.destroy()
})

t.test('a stream that does not read is dropped once its unsent bytes pass the bound; a reading one keeps going', async (t) => {
  const { page, base } = await serve(t, config('127.0.0.1:9153'))
  const slow = await rawStream(base, false)
  t.equal(await slow.head, 'HTTP/1.1 200 OK')
  const fast = await rawStream(base, true)
  let fastBytes = 0
  fast.sock.on('data', (b: Buffer) => (fastBytes += b.length))
  await fast.head
  t.equal(page.hub.size, 2)
  // Each name is ~4 KB of escaped JSON; at most 20 000 events (~80 MB offered) before giving up.
  const long = 'x'.repeat(60) + '.' + 'y'.repeat(4000)
  let pushed = 0
  let maxUnsent = 0
  for (; pushed < 20_000 && page.hub.stats.dropped === 0; pushed++) {
    page.tap(blocked(`${pushed}.${long}`))
    if (pushed % 50 === 49) {
      // Let the hub flush and the fast reader drain, as a live daemon's loop would.
      await new Promise((r) => setTimeout(r, 120))
      for (const res of (page.hub as unknown as { clients: Set<{ writableLength: number }> }).clients) maxUnsent = Math.max(maxUnsent, res.writableLength)
    }
  }
  t.equal(page.hub.stats.dropped, 1, `the slow stream was dropped after ${pushed} events`)
  t.ok(await waitFor(() => page.hub.size === 1), 'only the reading stream is left')
  t.ok(maxUnsent <= 256 * 1024 + 50 * 4200, `no stream ever had more than the bound plus one flush unsent (max ${maxUnsent} bytes)`)
  const before = fastBytes
  page.tap(blocked('after.example'))
  t.ok(await waitFor(() => fastBytes > before), 'the reading stream still receives')
  slow.sock.destroy()
  fast.sock.destroy()
})

t.test('a stream resumes after the last event it saw (Last-Event-ID); /api/events pages the ring', async (t) => {
  const { page, base } = await serve(t, config('127.0.0.1:9153'))
  for (const n of ['a.example', 'b.example', 'c.example']) page.tap(blocked(n))
  page.tap({ ...blocked('allowed.example'), verdict: 'allowed', reason: null })
  const ctrl = new AbortController()
  const res = await fetch(`${base}/api/stream`, { headers: { 'last-event-id': '1' }, signal: ctrl.signal })
  t.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  const reader = res.body!.getReader()
  let text = ''
  while (!text.includes('c.example')) text += new TextDecoder().decode((await reader.read()).value)
  t.notMatch(text, /a\.example/, 'what the client saw is not sent again')
  t.match(text, /id: 2\nevent: decision\ndata: \{[^\n]*"name":"b\.example"/)
  t.notMatch(text, /allowed\.example/, 'allowed decisions are not kept')
  page.tap(blocked('d.example'))
  while (!text.includes('d.example')) text += new TextDecoder().decode((await reader.read()).value)
  t.match(text, /id: 4\nevent: decision/, 'then live')
  ctrl.abort()

  const all = (await (await fetch(`${base}/api/events`)).json()) as { lastSeq: number; held: number; events: { name: string }[] }
  t.same(all.events.map((e) => e.name), ['a.example', 'b.example', 'c.example', 'd.example'])
  const some = (await (await fetch(`${base}/api/events?since=2&limit=1`)).json()) as typeof all
  t.same(some.events.map((e) => e.name), ['d.example'], 'since and limit (the newest)')
  const state = (await (await fetch(`${base}/api/state`)).json()) as { top: { names: unknown[]; devices: { key: string; count: number }[] }; access: string }
  t.same(state.top.devices, [{ key: '10.1.2.3', count: 4 }])
  t.equal(state.access, 'open')
  const yaml = await (await fetch(`${base}/api/proposal`)).text()
  t.match(yaml, /allow:\n {2}- "a\.example"/)
})

t.test('access follows the listener: loopback open, elsewhere a bearer token or nothing', async (t) => {
  t.test('loopback: open', async (t) => {
    const { base } = await serve(t, config('127.0.0.1:9153'))
    const res = await fetch(`${base}/`)
    t.equal(res.status, 200)
    t.match(res.headers.get('content-security-policy'), /script-src 'self'/)
    t.match(await res.text(), /<title>egressd<\/title>/)
    t.equal((await fetch(`${base}/api/state`)).status, 200)
    const rebound = await new Promise<number>((resolve, reject) => {
      // fetch() will not set Host; a raw request can, as a rebound browser would send it.
      const u = new URL(base)
      httpGet({ host: '127.0.0.1', port: Number(u.port), path: '/api/state', headers: { host: 'evil.example:9153' } }, (r) => {
        r.resume()
        resolve(r.statusCode ?? 0)
      }).on('error', reject)
    })
    t.equal(rebound, 403, 'a foreign Host header is refused')
  })
  t.test('another address with a token file: the page loads, the API needs the token', async (t) => {
    const { base } = await serve(t, config('0.0.0.0:9153', { tokenFile: 'token', tokenSha256: sha(TOKEN) }))
    t.equal((await fetch(`${base}/`)).status, 200, 'the page itself holds no data')
    const none = await fetch(`${base}/api/state`)
    t.equal(none.status, 401)
    t.equal(none.headers.get('www-authenticate'), 'Bearer realm="egressd"')
    t.equal((await fetch(`${base}/api/state`, { headers: { authorization: 'Bearer wrong' } })).status, 401)
    t.equal((await fetch(`${base}/api/state`, { headers: { authorization: `Bearer ${TOKEN}x` } })).status, 401)
    t.equal((await fetch(`${base}/api/events`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200)
    t.equal((await fetch(`${base}/api/stream`, { headers: { authorization: `Basic ${TOKEN}` } })).status, 401)
    t.equal((await fetch(`${base}/metrics`)).status, 200, '/metrics is not affected')
  })
  t.test('another address without a token file: off, with a hint', async (t) => {
    const { base, page } = await serve(t, config('192.0.2.1:9153'))
    const res = await fetch(`${base}/`)
    t.equal(res.status, 403)
    t.match(await res.text(), /ui\.token_file/)
    t.equal((await fetch(`${base}/api/state`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 403)
    page.tap(blocked('kept.example'))
    t.equal(page.ring.size, 1, 'events are still kept: a reload that adds a token shows them')
  })
  t.test('ui.enabled false: 404 as before the page existed, nothing kept', async (t) => {
    const { base, page } = await serve(t, config('127.0.0.1:9153', { enabled: false }))
    t.equal((await fetch(`${base}/`)).status, 404)
    t.equal((await fetch(`${base}/api/state`)).status, 404)
    page.tap(blocked('x.example'))
    t.equal(page.ring.size, 0)
  })
  t.test('a reload that turns the page off ends open streams', async (t) => {
    const { base, page } = await serve(t, config('127.0.0.1:9153'))
    const s = await rawStream(base, true)
    await s.head
    t.equal(page.hub.size, 1)
    page.apply(compileConfig(config('127.0.0.1:9153', { enabled: false, eventsMax: 100 })))
    t.equal(page.hub.size, 0)
    t.equal(page.ring.capacity, 100, 'ring size follows the reload')
    s.sock.destroy()
  })
})

t.test('a failed reload is shown with its errors until the next good one', async (t) => {
  const { base, page } = await serve(t, config('127.0.0.1:9153'))
  page.reloadFailed(['egressd.yaml:3:1: bad'])
  let state = (await (await fetch(`${base}/api/state`)).json()) as { reload: { ok: boolean; errors: string[] } }
  t.same(state.reload.errors, ['egressd.yaml:3:1: bad'])
  t.equal(state.reload.ok, false)
  page.apply(compileConfig(config('127.0.0.1:9153')))
  state = (await (await fetch(`${base}/api/state`)).json()) as typeof state
  t.equal(state.reload.ok, true)
})

t.test('the proposal is shared and recomputed at most every 5 s; its header says which event it covers', async (t) => {
  let clock = 1_000_000
  const { page, base } = await serve(t, config('127.0.0.1:9153'), () => clock)
  page.tap(blocked('one.example'))
  const first = await fetch(`${base}/api/proposal`)
  t.equal(first.headers.get('x-egressd-seq'), '1')
  t.match(await first.text(), /"one\.example"/)
  page.tap(blocked('two.example'))
  clock += 4_000
  const cached = await fetch(`${base}/api/proposal`)
  t.equal(cached.headers.get('x-egressd-seq'), '1', 'within 5 s: the same proposal')
  t.notMatch(await cached.text(), /two\.example/)
  clock += 1_000
  const fresh = await fetch(`${base}/api/proposal`)
  t.equal(fresh.headers.get('x-egressd-seq'), '2')
  t.match(await fresh.text(), /"two\.example"/)
  page.apply(compileConfig({ ...config('127.0.0.1:9153'), policy: [{ action: 'allow', entry: 'two.example', ports: [{ port: 443, proto: 'tcp' }], source: 'test' }] }))
  const reloaded = await (await fetch(`${base}/api/proposal`)).text()
  t.notMatch(reloaded, /- "two\.example"/, 'a reload recomputes at once: a name now allowed is left out')
})
