import t from 'tap'
import net from 'node:net'
import { once } from 'node:events'
import { Dialer, interleave, MAX_ATTEMPTS } from '../../src/sni/dial.js'
import type { UpstreamError } from '../../src/sni/metrics.js'

t.test('interleave: IPv6 first, alternating, bounded', async (t) => {
  t.same(interleave(['::1', '::2'], ['1.1.1.1', '2.2.2.2', '3.3.3.3']), ['::1', '1.1.1.1', '::2', '2.2.2.2', '3.3.3.3'])
  t.same(interleave([], ['1.1.1.1']), ['1.1.1.1'])
  t.same(interleave([], []), [])
  const many = Array.from({ length: 40 }, (_, i) => `10.0.0.${i}`)
  t.equal(interleave(many, many).length, MAX_ATTEMPTS)
})

function dial(addresses: string[], port: number, staggerMs = 250): { result: Promise<{ error: UpstreamError | null; socket: net.Socket | null }>; dialer: Dialer } {
  let dialer!: Dialer
  const result = new Promise<{ error: UpstreamError | null; socket: net.Socket | null }>((resolve) => {
    dialer = new Dialer(
      addresses,
      port,
      2000,
      (error, socket) => {
        socket?.on('error', () => {}) // the caller's duty, at once
        resolve({ error, socket })
      },
      staggerMs,
    )
  })
  dialer.start()
  return { result, dialer }
}

t.test('Dialer: the first address that connects wins; failures move on at once', async (t) => {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    s.end('hi')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port

  // 127.0.0.2 and ::1 have no listener on this port: refused at once, then the next one.
  const { result } = dial(['::1', '127.0.0.2', '127.0.0.1'], port, 10_000)
  const r = await result
  t.equal(r.error, null)
  t.equal(r.socket!.remoteAddress, '127.0.0.1', 'reached the third address without waiting for the stagger')
  r.socket!.destroy()

  const refused = await dial(['127.0.0.2', '127.0.0.3'], port).result
  t.same({ error: refused.error, socket: refused.socket }, { error: 'refused', socket: null })
  const none = await dial([], port).result
  t.equal(none.error, 'no_address')
  server.close()
})

t.test('Dialer: cancel stops everything and never calls back', async (t) => {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  let accepted = 0
  server.on('connection', (s) => {
    accepted++
    s.destroy()
  })
  let called = false
  const d = new Dialer(['127.0.0.1'], (server.address() as net.AddressInfo).port, 2000, () => (called = true))
  d.start()
  d.cancel()
  await new Promise((r) => setTimeout(r, 50))
  t.equal(called, false)
  server.close()
  t.ok(accepted <= 1)
})

/**
 * A black-holed address on loopback: a listener with backlog 0 that never accepts
 * (python3, since Node accepts on its own). Once one connection fills the queue, the
 * kernel drops further SYNs and connect() hangs until the dialer's own timeout.
 */
async function blackHole(t: { teardown(fn: () => void): void }): Promise<number | null> {
  const { spawn } = await import('node:child_process')
  const py = spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'])
  py.on('error', () => {})
  t.teardown(() => void py.kill())
  const port = await new Promise<number | null>((resolve) => {
    py.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())))
    py.once('error', () => resolve(null))
    py.once('exit', () => resolve(null))
  })
  if (port === null) return null
  const filler = net.connect({ host: '127.0.0.1', port })
  filler.on('error', () => {})
  t.teardown(() => void filler.destroy())
  await once(filler, 'connect')
  return port
}

const noPython = await new Promise<string | false>((resolve) => {
  import('node:child_process').then(({ execFile }) => execFile('python3', ['-c', 'pass'], (err) => resolve(err ? 'python3 is not installed' : false)))
})

t.test('Dialer: a black-holed address times out as connect_timeout', { skip: noPython, timeout: 10_000 }, async (t) => {
  const port = await blackHole(t)
  const r = await dial(['127.0.0.1'], port!, 250).result
  t.same({ error: r.error, socket: r.socket }, { error: 'connect_timeout', socket: null })
})

t.test('Dialer: a black-holed first address does not hold up the second (stagger)', { skip: noPython, timeout: 10_000 }, async (t) => {
  const port = await blackHole(t)
  // The same port on 127.0.0.2 works. The attempt on 127.0.0.1 would only fail after
  // 60 s; the test's 10 s timeout proves the second attempt started without waiting.
  const server = net.createServer((s) => s.on('error', () => {}))
  server.listen(port!, '127.0.0.2')
  await once(server, 'listening')
  let dialer!: Dialer
  const r = await new Promise<{ error: UpstreamError | null; socket: net.Socket | null }>((resolve) => {
    dialer = new Dialer(['127.0.0.1', '127.0.0.2'], port!, 60_000, (error, socket) => resolve({ error, socket }), 50)
    dialer.start()
  })
  t.equal(r.error, null)
  t.equal(r.socket!.remoteAddress, '127.0.0.2')
  r.socket!.destroy()
  server.close()
})
