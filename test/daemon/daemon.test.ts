// The Daemon object in-process: start binds every component by tiers, reload swaps the
// compiled policy (a bad file keeps the old one), concurrent reloads coalesce, stop is
// idempotent and releases every socket.
import t from 'tap'
import { captureLog } from '../helpers/capture-log.js'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Daemon, StartError } from '../../src/daemon/daemon.js'
import { ConfigErrors } from '../../src/errors.js'
import { fakeUpstream, query, udpExchange, decode } from '../dns/helpers.js'

const up = await fakeUpstream((q) => ({ answers: [{ name: q.name, type: 'A', ttl: 300, data: '198.51.100.7' }] as never }))
t.teardown(() => up.close())
const dir = mkdtempSync(join(tmpdir(), 'egressd-daemon-'))

function configText(allow: string[], extra = ''): string {
  return [
    'dns:',
    '  listen: ["127.0.0.1:0"]',
    `  upstreams: ["127.0.0.1:${up.port}"]`,
    'sni:',
    '  listen: ["127.0.0.1:0"]',
    'metrics:',
    '  listen: "127.0.0.1:0"',
    `allow: [${allow.map((a) => JSON.stringify(a)).join(', ')}]`,
    extra,
  ].join('\n')
}

const capture = () => captureLog('info')

async function rcode(port: number, name: string): Promise<string> {
  const reply = await udpExchange(port, query(name, 'A'))
  if (reply === null) return 'timeout'
  return ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'][(decode(reply).flags ?? 0) & 0xf] ?? 'other'
}

t.test('start, answer, reload, bad reload, coalesced reloads, stop', async (t) => {
  const file = join(dir, 'a.yaml')
  writeFileSync(file, configText(['api.example.com']))
  const { log, lines } = capture()
  const d = new Daemon(file, { log })
  t.same(d.components.map((c) => c.name).sort(), ['counters', 'dns', 'metrics', 'sni', 'ui'].sort(), 'no firewall component when the sink is off')
  await d.start()
  await d.start()
  t.equal(lines.filter((l) => l.msg === 'ready').length, 1, 'start is idempotent: one ready line')
  t.match(lines.find((l) => l.msg === 'ready'), { config: file })
  const port = d.addresses.dns.udp[0]!.port
  t.ok(port > 0, 'a kernel-chosen port is reported')
  t.equal(await rcode(port, 'api.example.com'), 'NOERROR')
  t.equal(await rcode(port, 'other.example.com'), 'NXDOMAIN')

  writeFileSync(file, configText(['other.example.com']))
  t.same(await d.reload(), { ok: true, rules: 1 })
  t.equal(await rcode(port, 'api.example.com'), 'NXDOMAIN', 'the reload removed it')
  t.equal(await rcode(port, 'other.example.com'), 'NOERROR', 'the reload added it')

  writeFileSync(file, configText(['api.example.com'], 'bogus: 1\n'))
  const bad = await d.reload()
  t.equal(bad.ok, false)
  t.match(bad, { errors: [/a\.yaml:\d+:\d+: .*bogus/] }, 'file:line:col in the error')
  t.equal(await rcode(port, 'other.example.com'), 'NOERROR', 'a bad reload keeps the old policy')
  const state = (await (await fetch(`http://127.0.0.1:${d.addresses.metrics!.port}/api/state`)).json()) as { reload: { ok: boolean; errors: string[] }; events: { held: number } }
  t.match(state.reload, { ok: false, errors: [/bogus/] }, 'the status page shows the failed reload and why')
  t.equal(state.events.held, 2, 'and the two blocked queries')

  writeFileSync(file, configText(['x.example.com']))
  const before = lines.filter((l) => l.msg === 'configuration reloaded').length
  const all = await Promise.all([d.reload(), d.reload(), d.reload()])
  for (const r of all) t.match(r, { ok: true })
  const reloads = lines.filter((l) => l.msg === 'configuration reloaded').length - before
  t.ok(reloads >= 1 && reloads <= 2, `three concurrent requests ran ${reloads} reload(s): one running, one coalesced`)

  await Promise.all([d.stop(), d.stop()])
  t.equal(lines.filter((l) => l.msg === 'stopped').length, 1, 'stop is idempotent')
  t.equal(await udpExchange(port, query('x.example.com', 'A'), 300), null, 'nothing answers after stop')
})

t.test('a reload requested during start runs once start has finished', async (t) => {
  const file = join(dir, 'b.yaml')
  writeFileSync(file, configText(['api.example.com']))
  const { log, lines } = capture()
  const d = new Daemon(file, { log })
  const started = d.start()
  writeFileSync(file, configText(['later.example.com']))
  const reloaded = d.reload()
  await started
  t.match(await reloaded, { ok: true, rules: 1 })
  const ready = lines.findIndex((l) => l.msg === 'ready')
  const reload = lines.findIndex((l) => l.msg === 'configuration reloaded')
  t.ok(ready >= 0 && reload > ready, 'reloaded after ready')
  t.equal(await rcode(d.addresses.dns.udp[0]!.port, 'later.example.com'), 'NOERROR')
  await d.stop()
})

t.test('a port already taken: StartError, and what had started is stopped again', async (t) => {
  const file = join(dir, 'c.yaml')
  writeFileSync(file, configText(['api.example.com']))
  const first = new Daemon(file, { log: capture().log })
  await first.start()
  t.teardown(() => first.stop())
  const taken = `127.0.0.1:${first.addresses.dns.udp[0]!.port}`
  writeFileSync(file, configText(['api.example.com']).replace('listen: ["127.0.0.1:0"]', `listen: ["${taken}"]`))
  const second = new Daemon(file, { log: capture().log })
  await t.rejects(second.start(), StartError)
  await second.stop()
})

t.test('an invalid file throws ConfigErrors from the constructor', async (t) => {
  const file = join(dir, 'd.yaml')
  writeFileSync(file, 'allow: [\n')
  t.throws(() => new Daemon(file, { log: capture().log }), ConfigErrors)
})
