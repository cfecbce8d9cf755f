/**
 * Issue #14: DNS over TLS upstreams against a real unbound (tls-port, test CA) and, for
 * the faults unbound does not make on demand, a small node:tls server. Every case ends in
 * a defined answer (the answer, failover to the next upstream, or SERVFAIL) and a counter.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseUpstream, type Upstream } from '../../src/config/upstream.js'
import { DOT_LIMITS } from '../../src/dns/upstream-tls.js'
import { allow, dig, hasTool, makeConfig, metric, startService, type Started } from './helpers.js'
import { createTestCa } from '../helpers/certs.js'
import { fakeDot } from '../helpers/secure-dns-servers.js'
import { startUnbound, unboundMissing, type Unbound } from '../helpers/unbound.js'

function up(text: string): Upstream {
  const u = parseUpstream(text)
  if (typeof u === 'string') throw new Error(u)
  return u
}

const POLICY = allow('dot.test', '*.dot.test')
const RECORDS = ['a.dot.test. 300 IN A 192.0.2.1', ...Array.from({ length: 40 }, (_, i) => `q${i}.dot.test. 300 IN A 192.0.2.${i}`)]

async function service(t: Test, upstreams: string[], caFile: string, timeoutMs = 1000): Promise<Started> {
  const s = await startService(makeConfig({ upstreams: upstreams.map(up), upstreamCaFile: caFile, upstreamTimeoutMs: timeoutMs }, POLICY))
  t.teardown(() => s.close())
  return s
}

const missing = await unboundMissing()
const kdig = await hasTool('kdig')

t.test('good path: kdig through egressd to unbound over TLS; one handshake for many queries', { skip: missing ?? (kdig ? false : 'kdig is not installed') }, async (t) => {
  const ub: Unbound = await startUnbound({ zone: 'dot.test.', records: RECORDS, certNames: ['dot.test'] })
  t.teardown(() => ub.stop())
  const label = `tls://127.0.0.1:${ub.tlsPort}#dot.test`
  const s = await service(t, [label], ub.caFile)
  const r = await dig('kdig', s.port, ['a.dot.test', 'A'])
  t.equal(r.status, 'NOERROR')
  t.same(r.answers.map((a) => a.at(-1)), ['192.0.2.1'])
  // 30 concurrent misses: pipelined on the pooled connection(s).
  const many = await Promise.all(Array.from({ length: 30 }, (_, i) => dig('kdig', s.port, [`q${i}.dot.test`, 'A'])))
  t.same(many.map((m) => m.answers[0]?.at(-1)), Array.from({ length: 30 }, (_, i) => `192.0.2.${i}`), 'each query got its own answer')
  const opened = await metric(s.registry, 'egressd_dns_upstream_connections_total', `transport="tls",upstream="${label}"`)
  t.ok(opened >= 1 && opened <= DOT_LIMITS.connections, `${opened} handshake(s) for 31 queries, at most the pool size`)
  t.equal(await metric(s.registry, 'egressd_dns_upstream_duration_seconds_count', `transport="tls",upstream="${label}"`), 31, 'latency per upstream and transport')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total'), 0)

  // The address itself as the authentication name: unbound's certificate carries IP 127.0.0.1.
  const s2 = await service(t, [`tls://127.0.0.1:${ub.tlsPort}`], ub.caFile)
  t.equal((await dig('kdig', s2.port, ['a.dot.test', 'A'])).status, 'NOERROR', 'verified against the IP SAN')
})

t.test('wrong name: unbound\'s certificate does not carry it; SERVFAIL alone, failover with a second upstream; logged once a minute', { skip: missing ?? false }, async (t) => {
  const ub = await startUnbound({ zone: 'dot.test.', records: RECORDS, certNames: ['dot.test'] })
  t.teardown(() => ub.stop())
  const bad = `tls://127.0.0.1:${ub.tlsPort}#other.test`
  const s = await service(t, [bad], ub.caFile)
  t.equal((await dig('dig', s.port, ['a.dot.test', 'A'])).status, 'SERVFAIL')
  t.equal((await dig('dig', s.port, ['q1.dot.test', 'A'])).status, 'SERVFAIL', 'never plain DNS instead')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${bad}"`), 2)
  const logged = s.logs.filter((l) => l.upstream === bad && l.level === 50)
  t.equal(logged.length, 1, 'one error line for two failures within a minute')
  t.match(logged[0], { code: 'ERR_TLS_CERT_ALTNAME_INVALID' })

  const good = `tls://127.0.0.1:${ub.tlsPort}#dot.test`
  const s2 = await service(t, [bad, good], ub.caFile)
  const r = await dig('dig', s2.port, ['a.dot.test', 'A'])
  t.equal(r.status, 'NOERROR', 'the next upstream answers')
  t.equal(await metric(s2.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${bad}"`), 1)
})

t.test('bad certificate (another CA) and expired certificate: certificate errors, connects backed off', async (t) => {
  const ca = createTestCa()
  const other = createTestCa('another CA')
  const dir = mkdtempSync(join(tmpdir(), 'egressd-dot-'))
  const caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, ca.cert)

  const untrusted = await fakeDot(other.issue(['dot.test']), 'normal')
  t.teardown(() => untrusted.close())
  const label = `tls://127.0.0.1:${untrusted.port}#dot.test`
  const s = await service(t, [label], caFile)
  for (let i = 0; i < 3; i++) t.equal((await dig('dig', s.port, [`q${i}.dot.test`, 'A'])).status, 'SERVFAIL')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${label}"`), 3)
  t.equal(untrusted.accepted, 1, 'one connect: the next tries fail at once during the backoff')
  t.equal(untrusted.queries, 0, 'no query is ever sent over an unverified connection')

  const expired = await fakeDot(ca.issue(['dot.test'], { expired: true }), 'normal')
  t.teardown(() => expired.close())
  const exp = `tls://127.0.0.1:${expired.port}#dot.test`
  const s2 = await service(t, [exp], caFile)
  t.equal((await dig('dig', s2.port, ['q1.dot.test', 'A'])).status, 'SERVFAIL')
  t.equal(await metric(s2.registry, 'egressd_dns_upstream_errors_total', `reason="certificate",upstream="${exp}"`), 1)
  t.match(s2.logs.find((l) => l.upstream === exp), { code: 'CERT_HAS_EXPIRED' })
})

t.test('answers out of order are matched by ID', async (t) => {
  const ca = createTestCa()
  const dir = mkdtempSync(join(tmpdir(), 'egressd-dot-'))
  writeFileSync(join(dir, 'ca.pem'), ca.cert)
  const srv = await fakeDot(ca.issue(['dot.test']), 'reverse', 8)
  t.teardown(() => srv.close())
  const s = await service(t, [`tls://127.0.0.1:${srv.port}#dot.test`], join(dir, 'ca.pem'))
  const r = await Promise.all(Array.from({ length: 8 }, (_, i) => dig('dig', s.port, [`q${i + 1}.dot.test`, 'A'])))
  t.same(r.map((x) => x.answers[0]?.at(-1)), Array.from({ length: 8 }, (_, i) => `192.0.2.${i + 1}`))
  t.equal(srv.handshakes, 1, 'all eight pipelined on one connection')
  t.same(new Set(srv.lengths), new Set([128]), 'every query padded to 128 bytes (RFC 8467)')
  srv.mode = 'normal'
  const long = `q9.${'a'.repeat(60)}.${'b'.repeat(60)}.dot.test`
  t.equal((await dig('dig', s.port, [long, 'A'])).answers[0]?.at(-1), '192.0.2.9', 'a padded query is answered')
  t.equal(srv.lengths.at(-1), 256, 'a 162-byte query is padded to the next block, 256')
})

t.test('server closing mid-pipeline: retried once on a fresh connection; closing again: SERVFAIL or the next upstream', async (t) => {
  const ca = createTestCa()
  const dir = mkdtempSync(join(tmpdir(), 'egressd-dot-'))
  const caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, ca.cert)
  const leaf = ca.issue(['dot.test'])

  const once = await fakeDot(leaf, 'close-first', 3)
  t.teardown(() => once.close())
  const label = `tls://127.0.0.1:${once.port}#dot.test`
  const s = await service(t, [label], caFile)
  const r = await Promise.all([1, 2, 3].map((i) => dig('dig', s.port, [`q${i}.dot.test`, 'A'])))
  t.same(r.map((x) => x.answers[0]?.at(-1)), ['192.0.2.1', '192.0.2.2', '192.0.2.3'], 'answered after the retry')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_errors_total', `reason="closed",upstream="${label}"`), 3, 'each lost query counted')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_closed_total', `reason="server",upstream="${label}"`), 1)

  const always = await fakeDot(leaf, 'close-always', 1)
  t.teardown(() => always.close())
  const bad = `tls://127.0.0.1:${always.port}#dot.test`
  const s2 = await service(t, [bad], caFile)
  t.equal((await dig('dig', s2.port, ['q4.dot.test', 'A'])).status, 'SERVFAIL')
  t.equal(await metric(s2.registry, 'egressd_dns_upstream_errors_total', `reason="closed",upstream="${bad}"`), 2, 'the retry and the failed try')
  const good = await fakeDot(leaf, 'normal')
  t.teardown(() => good.close())
  const s3 = await service(t, [bad, `tls://127.0.0.1:${good.port}#dot.test`], caFile)
  t.same((await dig('dig', s3.port, ['q5.dot.test', 'A'])).answers[0]?.at(-1), '192.0.2.5', 'failover to the next upstream')
})

t.test('idle connections close and reopen; the pool is bounded', async (t) => {
  const ca = createTestCa()
  const dir = mkdtempSync(join(tmpdir(), 'egressd-dot-'))
  writeFileSync(join(dir, 'ca.pem'), ca.cert)
  const srv = await fakeDot(ca.issue(['dot.test']), 'normal')
  t.teardown(() => srv.close())
  const saved = DOT_LIMITS.idleMs
  DOT_LIMITS.idleMs = 200
  t.teardown(() => void (DOT_LIMITS.idleMs = saved))
  const label = `tls://127.0.0.1:${srv.port}#dot.test`
  const s = await service(t, [label], join(dir, 'ca.pem'))
  t.equal((await dig('dig', s.port, ['q1.dot.test', 'A'])).status, 'NOERROR')
  t.equal(s.svc.resolver.upstreamConnections, 1)
  await new Promise((r) => setTimeout(r, 400))
  t.equal(s.svc.resolver.upstreamConnections, 0, 'closed after idleMs')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_closed_total', `reason="idle",upstream="${label}"`), 1)
  t.equal((await dig('dig', s.port, ['q2.dot.test', 'A'])).status, 'NOERROR', 'reopened on demand')
  t.equal(await metric(s.registry, 'egressd_dns_upstream_connections_total', `transport="tls",upstream="${label}"`), 2)
})
