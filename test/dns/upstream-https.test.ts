/**
 * Issue #14: DNS over HTTPS upstreams against a real unbound (https-port, built with
 * libnghttp2) and a node:http2 server for GOAWAY and HTTP errors. Each case ends in a
 * defined answer and a counter.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseUpstream, type Upstream } from '../../src/config/upstream.js'
import { DOH_LIMITS } from '../../src/dns/upstream-https.js'
import { allow, dig, hasTool, makeConfig, metric, query, startService, udpExchange, type Started } from './helpers.js'
import { createTestCa } from '../helpers/certs.js'
import { fakeDoh } from '../helpers/secure-dns-servers.js'
import { startUnbound, unboundHasHttps, unboundMissing } from '../helpers/unbound.js'

function up(text: string): Upstream {
  const u = parseUpstream(text)
  if (typeof u === 'string') throw new Error(u)
  return u
}

const POLICY = allow('doh.test', '*.doh.test')

async function service(t: Test, upstreams: string[], caFile: string, timeoutMs = 1000): Promise<Started> {
  const s = await startService(makeConfig({ upstreams: upstreams.map(up), upstreamCaFile: caFile, upstreamTimeoutMs: timeoutMs }, POLICY))
  t.teardown(() => s.close())
  return s
}

function caDir(cert: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-doh-'))
  writeFileSync(join(dir, 'ca.pem'), cert)
  return join(dir, 'ca.pem')
}

const missing = (await unboundMissing()) ?? ((await unboundHasHttps()) ? null : 'this unbound has no https-port (built without libnghttp2)')
const kdig = await hasTool('kdig')

t.test('good path: kdig through egressd to unbound over HTTP/2; one session for many queries', { skip: missing ?? (kdig ? false : 'kdig is not installed') }, async (t) => {
  const ub = await startUnbound({
    zone: 'doh.test.',
    records: ['a.doh.test. 300 IN A 192.0.2.1', ...Array.from({ length: 30 }, (_, i) => `q${i}.doh.test. 300 IN A 192.0.2.${i}`)],
    certNames: ['doh.test'],
  })
  t.teardown(() => ub.stop())
  const label = `https://doh.test:${ub.httpsPort}/dns-query#127.0.0.1`
  const s = await service(t, [label], ub.caFile)
  const r = await dig('kdig', s.port, ['a.doh.test', 'A'])
  t.equal(r.status, 'NOERROR')
  t.same(r.answers.map((a) => a.at(-1)), ['192.0.2.1'])
  const many = await Promise.all(Array.from({ length: 30 }, (_, i) => dig('kdig', s.port, [`q${i}.doh.test`, 'A'])))
  t.same(many.map((m) => m.answers[0]?.at(-1)), Array.from({ length: 30 }, (_, i) => `192.0.2.${i}`))
  t.equal(await metric(s.registry, 'egressd_dns_upstream_connections_total', `transport="https",upstream="${label}"`), 1, 'one session, reused')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_duration_seconds_count', `transport="https",upstream="${label}"`), 31)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total'), 0)

  // 1500 exchanges on one session: answered streams must not be reset, or
  // nghttp2's rapid-reset guard in unbound sends GOAWAY about every 1000 streams.
  const burst = await startService(makeConfig({ upstreams: [up(label)], upstreamCaFile: ub.caFile, upstreamTimeoutMs: 3000 }, POLICY))
  t.teardown(() => burst.close())
  for (let i = 0; i < 15; i++) {
    // Distinct names (NXDOMAIN from unbound's static zone): no two share an upstream exchange.
    const answers = await Promise.all(Array.from({ length: 100 }, (_, j) => udpExchange(burst.port, query(`n${i}-${j}.doh.test`, 'A'), 3000)))
    if (answers.some((a) => a === null || (a[3]! & 0x0f) !== 3)) {
      t.fail(`batch ${i}: a query went unanswered or failed: ${(await burst.registry.metrics()).split('\n').filter((l) => /upstream_(errors|closed|connections)_total\{/.test(l) && !l.endsWith(' 0')).join('; ')}`)
      break
    }
  }
  t.equal(await metric(burst.registry, 'egressd_dns_upstream_connections_total'), 1, 'one session for 1500 exchanges')
  t.equal(await metric(burst.registry, 'egressd_dns_upstream_closed_total'), 0, 'no GOAWAY')
  t.equal(await metric(burst.registry, 'egressd_dns_upstream_errors_total'), 0)

  const wrong = `https://other.test:${ub.httpsPort}/dns-query#127.0.0.1`
  const s2 = await service(t, [wrong], ub.caFile)
  t.equal((await dig('dig', s2.port, ['a.doh.test', 'A'])).status, 'SERVFAIL', 'a name the certificate lacks: SERVFAIL')
  t.equal(await metric(s2.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${wrong}"`), 1)
  t.equal(s2.logs.filter((l) => l.upstream === wrong && l.level === 50).length, 1, 'logged with the upstream\'s name')
})

t.test('POST application/dns-message to the configured path; Cache-Control ignored for the DNS TTL', async (t) => {
  const ca = createTestCa()
  const srv = await fakeDoh(ca.issue(['doh.test']), 'normal')
  t.teardown(() => srv.close())
  const s = await service(t, [`https://doh.test:${srv.port}/resolve?x=1#127.0.0.1`], caDir(ca.cert))
  t.equal((await dig('dig', s.port, ['q7.doh.test', 'A'])).answers[0]?.at(-1), '192.0.2.7')
  t.equal((await dig('dig', s.port, ['q7.doh.test', 'A'])).answers[0]?.at(-1), '192.0.2.7')
  // 40 bytes of query padded to 128 (RFC 8467 block padding, EDNS option 12).
  t.same(srv.seen[0], { method: 'POST', path: '/resolve?x=1', contentType: 'application/dns-message', length: 128 })
  t.equal(srv.requests, 1, 'the second query came from the cache (TTL 300) despite "Cache-Control: max-age=0, no-store"')
  t.equal(srv.sessions, 1)
})

t.test('GOAWAY after an answer: the next query opens a new session; GOAWAY refusing a stream: retried on a new session', async (t) => {
  const ca = createTestCa()
  const caFile = caDir(ca.cert)
  const leaf = ca.issue(['doh.test'])
  const graceful = await fakeDoh(leaf, 'goaway-after-answer')
  t.teardown(() => graceful.close())
  const label = `https://doh.test:${graceful.port}/dns-query#127.0.0.1`
  const s = await service(t, [label], caFile)
  t.equal((await dig('dig', s.port, ['q1.doh.test', 'A'])).answers[0]?.at(-1), '192.0.2.1')
  await new Promise((r) => setTimeout(r, 50))
  t.equal((await dig('dig', s.port, ['q2.doh.test', 'A'])).answers[0]?.at(-1), '192.0.2.2')
  t.equal(graceful.sessions, 2)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_closed_total', `reason="goaway",upstream="${label}"`), 2, 'counted: each session ended by its GOAWAY')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total'), 0, 'no query lost')

  const refusing = await fakeDoh(leaf, 'goaway-refuse-first')
  t.teardown(() => refusing.close())
  const label2 = `https://doh.test:${refusing.port}/dns-query#127.0.0.1`
  const s2 = await service(t, [label2], caFile)
  t.equal((await dig('dig', s2.port, ['q3.doh.test', 'A'])).answers[0]?.at(-1), '192.0.2.3', 'answered on the second session')
  t.equal(refusing.sessions, 2)
  t.equal(await metric(s2.registry, 'egressd_dns_upstream_errors_total', `reason="closed",upstream="${label2}"`), 1, 'the refused stream counted')
})

t.test('HTTP 500 and a wrong content type: errors{reason="http"}, SERVFAIL or the next upstream', async (t) => {
  const ca = createTestCa()
  const caFile = caDir(ca.cert)
  const leaf = ca.issue(['doh.test'])
  const five = await fakeDoh(leaf, 'http-500')
  t.teardown(() => five.close())
  const html = await fakeDoh(leaf, 'wrong-type')
  t.teardown(() => html.close())
  const good = await fakeDoh(leaf, 'normal')
  t.teardown(() => good.close())
  const a = `https://doh.test:${five.port}/dns-query#127.0.0.1`
  const b = `https://doh.test:${html.port}/dns-query#127.0.0.1`
  const s = await service(t, [a, b], caFile)
  t.equal((await dig('dig', s.port, ['q1.doh.test', 'A'])).status, 'SERVFAIL')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="http",upstream="${a}"`), 1)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="http",upstream="${b}"`), 1)
  const s2 = await service(t, [a, `https://doh.test:${good.port}/dns-query#127.0.0.1`], caFile)
  t.equal((await dig('dig', s2.port, ['q2.doh.test', 'A'])).answers[0]?.at(-1), '192.0.2.2', 'failover')
})

t.test('bad certificate and expired certificate over HTTPS: certificate errors, backoff', async (t) => {
  const ca = createTestCa()
  const caFile = caDir(ca.cert)
  const untrusted = await fakeDoh(createTestCa('another CA').issue(['doh.test']), 'normal')
  t.teardown(() => untrusted.close())
  const expired = await fakeDoh(ca.issue(['doh.test'], { expired: true }), 'normal')
  t.teardown(() => expired.close())
  const a = `https://doh.test:${untrusted.port}/dns-query#127.0.0.1`
  const b = `https://doh.test:${expired.port}/dns-query#127.0.0.1`
  const s = await service(t, [a, b], caFile)
  t.equal((await dig('dig', s.port, ['q1.doh.test', 'A'])).status, 'SERVFAIL')
  t.equal((await dig('dig', s.port, ['q2.doh.test', 'A'])).status, 'SERVFAIL')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${a}"`), 2)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${b}"`), 2)
  t.equal(untrusted.requests + expired.requests, 0, 'nothing sent over an unverified connection')
  t.equal(untrusted.sessions + expired.sessions, 0)
  t.match(s.logs.find((l) => l.upstream === b), { code: 'CERT_HAS_EXPIRED' })
})

t.test('idle sessions close', async (t) => {
  const ca = createTestCa()
  const srv = await fakeDoh(ca.issue(['doh.test']), 'normal')
  t.teardown(() => srv.close())
  const saved = DOH_LIMITS.idleMs
  DOH_LIMITS.idleMs = 200
  t.teardown(() => void (DOH_LIMITS.idleMs = saved))
  const label = `https://doh.test:${srv.port}/dns-query#127.0.0.1`
  const s = await service(t, [label], caDir(ca.cert))
  t.equal((await dig('dig', s.port, ['q1.doh.test', 'A'])).status, 'NOERROR')
  t.equal(s.svc.resolver.upstreamConnections, 1)
  await new Promise((r) => setTimeout(r, 400))
  t.equal(s.svc.resolver.upstreamConnections, 0)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_closed_total', `reason="idle",upstream="${label}"`), 1)
})
