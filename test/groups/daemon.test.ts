/**
 * Per-client groups through the built daemon: clients on different loopback addresses
 * (dig -b, curl --interface) get different verdicts for the same name over DNS and SNI;
 * report mode and report entries let traffic through and count it as would_block.
 */
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { CLI, freePort, runCommand, startDaemon } from '../helpers/daemon.js'
import { loopbackUpstream, startTlsSite } from '../helpers/tls-site.js'
import { metricValue } from '../sni/harness.js'

const run = runCommand

const missing = async (tool: string) => (await run('sh', ['-c', `command -v ${tool}`])).code !== 0
const skip = !existsSync(CLI)
  ? `${CLI} is not built (npm test builds it first)`
  : (await missing('dig')) || (await missing('curl'))
    ? 'dig and curl are needed (.ci/run installs them)'
    : false

const status = (out: string): string => /status: ([A-Z]+)/.exec(out)?.[1] ?? 'none'
const answers = (out: string): number => Number(/ANSWER: (\d+),/.exec(out)?.[1] ?? -1)

t.test('groups: same name, different clients, different verdicts; report mode counts would_block', { skip }, async (t) => {
  const { port: sitePort, caFile } = await startTlsSite(t, ['dev.vendor.test', 'api.shared.test', 'x.newvendor.test'])
  const upstream = await loopbackUpstream(t)

  const [dnsPort, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const d = startDaemon([
    'dns:',
    `  listen: ["127.0.0.1:${dnsPort}"]`,
    `  upstreams: ["127.0.0.1:${upstream.port}"]`,
    '  clients: [127.0.0.0/8]',
    '  rebind_protection: false   # the fake upstream answers 127.0.0.1',
    '  rate_limit: { qps: 0 }',
    'sni:',
    `  listen: ["127.0.0.1:${sniPort}"]`,
    `  upstream_port: ${sitePort}`,
    '  allow_private_destinations: true',
    'metrics:',
    `  listen: "127.0.0.1:${metricsPort}"`,
    'allow: ["api.shared.test"]',
    'groups:',
    '  - name: sensors',
    '    clients: [127.0.0.2/32]',
    '    allow: ["*.vendor.test"]',
    '  - name: onboarding',
    '    clients: [127.0.0.3/32]',
    '    mode: report',
    '  - name: trial',
    '    clients: [127.0.0.4/32]',
    '    allow: ["api.shared.test"]',
    '    report: ["*.newvendor.test"]',
    '',
  ].join('\n'))
  t.teardown(() => d.stop())
  const ready = await d.waitForLog('ready')
  t.same(ready.groups, ['sensors', 'onboarding (report)', 'trial', 'default'])

  const dig = async (from: string, name: string) =>
    (await run('dig', ['@127.0.0.1', '-p', String(dnsPort), '-b', from, '+tries=1', '+time=2', name, 'A'])).stdout
  const curl = (from: string, name: string) =>
    run('curl', ['-sS', '--max-time', '10', '--interface', from, '--connect-to', `${name}:443:127.0.0.1:${sniPort}`, '--cacert', caFile, `https://${name}/`])

  // DNS: the same names, four clients.
  t.equal(status(await dig('127.0.0.1', 'dev.vendor.test')), 'NXDOMAIN', 'default group: not allowed')
  const sensors = await dig('127.0.0.2', 'dev.vendor.test')
  t.equal(status(sensors), 'NOERROR', 'sensors: allowed by its own wildcard')
  t.equal(answers(sensors), 1)
  t.equal(status(await dig('127.0.0.2', 'api.shared.test')), 'NXDOMAIN', 'sensors do not get the top-level list')
  t.equal(status(await dig('127.0.0.1', 'api.shared.test')), 'NOERROR')
  const apex = await dig('127.0.0.2', 'vendor.test')
  t.equal(status(apex), 'NOERROR', 'NODATA for the sensors: names below are allowed for them')
  t.equal(answers(apex), 0)
  t.equal(status(await dig('127.0.0.1', 'vendor.test')), 'NXDOMAIN', 'NXDOMAIN for the default group: nothing below is allowed for it')
  const report = await dig('127.0.0.3', 'anything.example.org')
  t.equal(status(report), 'NOERROR', 'report mode: resolves')
  t.equal(answers(report), 1)
  t.equal(status(await dig('127.0.0.4', 'x.newvendor.test')), 'NOERROR', 'a report entry lets its names through')
  t.equal(status(await dig('127.0.0.4', 'evil.example.org')), 'NXDOMAIN', 'but nothing else in an enforcing group')

  // SNI: the same name from two clients, and through report mode.
  const ok = await curl('127.0.0.2', 'dev.vendor.test')
  t.equal(ok.code, 0, ok.stderr)
  t.equal(ok.stdout, 'served dev.vendor.test')
  const reset = await curl('127.0.0.1', 'dev.vendor.test')
  t.equal(reset.code, 35, 'default group: reset during the TLS handshake')
  const reported = await curl('127.0.0.3', 'dev.vendor.test')
  t.equal(reported.code, 0, reported.stderr)
  t.equal(reported.stdout, 'served dev.vendor.test', 'report mode: spliced')

  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  const m = (s: string) => metricValue(text, s)
  t.equal(m('egressd_dns_queries_total{verdict="would_block"}'), 2)
  t.equal(m('egressd_dns_queries_total{verdict="blocked"}'), 5)
  t.equal(m('egressd_dns_queries_total{verdict="allowed"}'), 2)
  t.equal(m('egressd_sni_connections_total{verdict="would_block"}'), 1)
  t.equal(m('egressd_sni_connections_total{verdict="allowed"}'), 1)
  t.equal(m('egressd_sni_connections_total{verdict="blocked"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="sensors",protocol="dns",verdict="allowed"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="sensors",protocol="dns",verdict="blocked"}'), 2)
  t.equal(m('egressd_group_decisions_total{group="onboarding",protocol="dns",verdict="would_block"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="trial",protocol="dns",verdict="would_block"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="trial",protocol="dns",verdict="blocked"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="default",protocol="dns",verdict="blocked"}'), 2)
  t.equal(m('egressd_group_decisions_total{group="sensors",protocol="sni",verdict="allowed"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="default",protocol="sni",verdict="blocked"}'), 1)
  t.equal(m('egressd_group_decisions_total{group="onboarding",protocol="sni",verdict="would_block"}'), 1)
  t.notOk(text.includes('name="anything.example.org"'), 'would_block is not a block: no blocked_total series')
  t.equal(m('egressd_blocked_total{protocol="dns",name="evil.example.org"}'), 1)

  t.match(d.logs.find((l) => l.msg === 'dns query blocked' && l.client === '127.0.0.2'), { group: 'sensors', mode: 'enforce', name: 'api.shared.test' })
  t.match(d.logs.find((l) => l.msg === 'dns query would be blocked' && l.client === '127.0.0.3'), {
    level: 'info', verdict: 'would_block', group: 'onboarding', mode: 'report', name: 'anything.example.org', report_rule: '*',
  })
  t.match(d.logs.find((l) => l.msg === 'dns query would be blocked' && l.client === '127.0.0.4'), { group: 'trial', mode: 'enforce', report_rule: '*.newvendor.test' })
  t.match(d.logs.find((l) => l.protocol === 'sni' && l.verdict === 'would_block'), { group: 'onboarding', mode: 'report', name: 'dev.vendor.test', client: '127.0.0.3' })
  t.match(d.logs.find((l) => l.protocol === 'sni' && l.verdict === 'blocked'), { group: 'default', client: '127.0.0.1' })

  // A reload that moves 127.0.0.2 out of its group changes its verdicts at once and
  // keeps the surviving groups' counts.
  writeFileSync(d.file, readFileSync(d.file, 'utf8').replace('127.0.0.2/32', '127.0.0.5/32'))
  d.proc.kill('SIGHUP')
  await d.waitForLog('configuration reloaded')
  t.equal(status(await dig('127.0.0.2', 'dev.vendor.test')), 'NXDOMAIN', 'now in the default group')
  const after = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  t.equal(metricValue(after, 'egressd_group_decisions_total{group="sensors",protocol="dns",verdict="allowed"}'), 1, 'carried over the reload')
  t.equal(await d.stop(), 0)
})
