/**
 * ECH through the built daemon (dist/cli.js): HTTPS answers from a real nsd lose `ech`
 * (kdig reads them), a hostile upstream's SvcParams give SERVFAIL + EDE 24, and an ECH
 * ClientHello to the SNI listener is blocked on its outer name with a line that says so.
 */
import t from 'tap'
import { fakeUpstream, hasTool } from '../dns/helpers.js'
import { startNsd } from '../dns/nsd.js'
import { alpn, build, ECH_CONFIG, KEY, name, params, u16 } from '../dns/svcb-wire.js'
import { freePort, runCommand, startDaemon } from '../helpers/daemon.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { rawExchange } from '../sni/harness.js'

const skip = !(await hasTool('nsd')) ? 'nsd not installed' : !(await hasTool('kdig')) ? 'kdig not installed' : false

const ZONE = `$ORIGIN ech.test.
$TTL 300
@    SOA   ns hostmaster 1 3600 600 86400 60
@    NS    ns
ns   A     93.184.216.35
www  HTTPS 1 . alpn=h3,h2 ipv4hint=104.16.132.229 ech=${ECH_CONFIG.toString('base64')} ipv6hint=2606:4700::6810:84e5
`

t.test('the built daemon strips ech, refuses hostile SvcParams, names ECH hellos', { skip }, async (t) => {
  const nsd = await startNsd('ech.test', ZONE)
  t.teardown(() => nsd.close())
  const hostile = await fakeUpstream((q) =>
    build({ id: q.id, question: { name: q.name, type: 65 }, answer: [{ name: q.name, type: 65, rdata: [u16(1), name('.', false), params([[KEY.ech, ECH_CONFIG], [KEY.alpn, alpn('h2')]])] }] }),
  )
  t.teardown(() => hostile.close())
  const [dnsPort, sniPort, metricsPort, hostilePort, hostileSni] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()]
  const config = (upstream: number, dns: number, sni: number, metrics: number | null) =>
    [
      'dns:',
      `  listen: ["127.0.0.1:${dns}"]`,
      `  upstreams: ["127.0.0.1:${upstream}"]`,
      'sni:',
      `  listen: ["127.0.0.1:${sni}"]`,
      'metrics:',
      `  listen: ${metrics === null ? 'null' : `"127.0.0.1:${metrics}"`}`,
      'allow: ["*.ech.test"]',
      '',
    ].join('\n')
  const d = startDaemon(config(nsd.port, dnsPort, sniPort, metricsPort))
  t.teardown(() => d.stop())
  await d.waitForLog('ready')

  const direct = await runCommand('kdig', ['@127.0.0.1', '-p', String(nsd.port), 'www.ech.test', 'HTTPS', '+norec'])
  const via = await runCommand('kdig', ['@127.0.0.1', '-p', String(dnsPort), 'www.ech.test', 'HTTPS'])
  t.match(direct.stdout, /ech=/)
  t.match(via.stdout, /status: NOERROR/)
  t.notMatch(via.stdout, /ech=/)
  const record = (out: string) => /HTTPS\s+(1 \. .*)$/m.exec(out)?.[1]
  t.equal(record(via.stdout), record(direct.stdout)!.replace(/ ech=\S+/, ''), 'the record as nsd sent it, ech aside')
  const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  t.match(metrics, /egressd_dns_ech_stripped_total\{what="param"\} 1/)

  // An ECH hello whose outer name is not allowed.
  const out = await rawExchange(sniPort, buildClientHello({ sni: 'cloudflare-ech.com', ech: true }))
  t.equal(out.error, 'ECONNRESET')
  const line = await d.waitForLog('blocked (ECH hello: outer name)')
  t.match(line, { protocol: 'sni', name: 'cloudflare-ech.com', ech: true, verdict: 'blocked' })
  const after = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  t.match(after, /egressd_sni_ech_hellos_total\{verdict="blocked"\} 1/)

  // A second daemon in front of a hostile upstream: keys out of order.
  const h = startDaemon(config(hostile.port, hostilePort, hostileSni, null))
  t.teardown(() => h.stop())
  await h.waitForLog('ready')
  const bad = await runCommand('kdig', ['@127.0.0.1', '-p', String(hostilePort), 'bad.ech.test', 'HTTPS', '+edns'])
  t.match(bad.stdout, /status: SERVFAIL/)
  t.match(bad.stdout, /EDE: 24/)
  t.ok(h.logs.some((l) => l.msg === 'HTTPS/SVCB answer not relayed: malformed SvcParams (dns.ech: strip)' && l.reason === 'svcparam_order'))
})
