/**
 * The SNI path through the built daemon (`node dist/cli.js run`): the name is resolved
 * by egressd's own resolver core against a fake DNS upstream, curl gets the HTTPS
 * upstream's body for an allowed name and a reset for a blocked one, and the metrics
 * endpoint and the JSON log lines say so.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { CLI, freePort, runCommand, startDaemon } from '../helpers/daemon.js'
import { loopbackUpstream, startTlsSite } from '../helpers/tls-site.js'
import { metricValue } from './harness.js'

const run = runCommand

const skip = !existsSync(CLI)
  ? `${CLI} is not built (npm test builds it first)`
  : (await run('sh', ['-c', 'command -v curl'])).code !== 0
    ? 'curl is not installed'
    : false

t.test('curl through the daemon: allowed name served, blocked name reset', { skip }, async (t) => {
  const { port: sitePort, caFile } = await startTlsSite(t, ['device-api.allowed.test'])
  const dns = await loopbackUpstream(t)

  const [dnsPort, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const d = startDaemon(
    [
      'dns:',
      `  listen: ["127.0.0.1:${dnsPort}"]`,
      `  upstreams: ["127.0.0.1:${dns.port}"]`,
      'sni:',
      `  listen: ["127.0.0.1:${sniPort}"]`,
      `  upstream_port: ${sitePort}`,
      '  allow_private_destinations: true',
      'metrics:',
      `  listen: "127.0.0.1:${metricsPort}"`,
      'allow: ["*.allowed.test"]',
      '',
    ].join('\n'),
  )
  t.teardown(() => d.stop())
  await d.waitForLog('ready')

  const curl = (name: string) =>
    run('curl', ['-sS', '--max-time', '10', '--connect-to', `${name}:443:127.0.0.1:${sniPort}`, '--cacert', caFile, `https://${name}/`])
  const ok = await curl('device-api.allowed.test')
  t.equal(ok.code, 0, ok.stderr)
  t.equal(ok.stdout, 'served device-api.allowed.test')
  const blocked = await curl('evil.test')
  t.equal(blocked.code, 35, 'blocked: TLS connect error')
  t.match(blocked.stderr, /reset by peer|SSL_ERROR_SYSCALL/)
  t.ok(dns.queries.every((q) => q.name === 'device-api.allowed.test'), 'only the allowed name was resolved')

  const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  t.equal(metricValue(metrics, 'egressd_sni_connections_total{verdict="allowed"}'), 1)
  t.equal(metricValue(metrics, 'egressd_sni_connections_total{verdict="blocked"}'), 1)
  t.equal(metricValue(metrics, 'egressd_blocked_total{protocol="sni",name="evil.test"}'), 1)
  t.ok(metricValue(metrics, 'egressd_sni_bytes_total{direction="downstream"}') > 0)
  t.equal(metricValue(metrics, 'egressd_sni_upstream_connect_seconds_count'), 1)
  t.match(
    d.logs.find((l) => l.protocol === 'sni'),
    { level: 'info', msg: 'blocked', name: 'evil.test', verdict: 'blocked', rule: null, reason: 'not_allowed', client: '127.0.0.1' },
  )
  t.equal(await d.stop(), 0, 'SIGTERM: exit 0')
})
