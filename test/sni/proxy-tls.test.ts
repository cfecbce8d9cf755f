/**
 * Real TLS clients (Node's tls, openssl s_client, curl) through an in-process SniProxy
 * to an HTTPS upstream whose certificate depends on the SNI it receives, signed by a
 * throwaway node-forge CA.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import https from 'node:https'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { createTestCa } from '../helpers/certs.js'
import { fakeResolver, rawExchange, startProxy, startRawUpstream } from './harness.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'

const ca = createTestCa()
const dir = mkdtempSync(join(tmpdir(), 'egressd-sni-'))
const caFile = join(dir, 'ca.pem')
writeFileSync(caFile, ca.cert)

const NAMES = ['www.allowed.test', 'api.allowed.test', 'v6first.allowed.test', 'deadfirst.allowed.test', 'blocked.test']
const contexts = new Map(NAMES.map((n) => [n, tls.createSecureContext(ca.issue([n]))]))

/** HTTPS upstream: GET answers `hello from <servername>`, POST echoes its body. */
async function startHttpsUpstream(): Promise<{ server: https.Server; port: number; accepted: () => number }> {
  let accepted = 0
  const server = https.createServer(
    {
      ...ca.issue(['default.invalid']),
      SNICallback: (name, cb) => cb(null, contexts.get(name)),
    },
    (req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const servername = (req.socket as tls.TLSSocket).servername
        res.setHeader('connection', 'close')
        res.end(req.method === 'POST' ? Buffer.concat(chunks) : `hello from ${servername}`)
      })
    },
  )
  server.on('connection', () => accepted++)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, port: (server.address() as net.AddressInfo).port, accepted: () => accepted }
}

function run(cmd: string, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
      resolve({ code, stdout, stderr })
    })
    child.stdin?.on('error', () => {})
    child.stdin?.end(input)
  })
}

async function have(cmd: string): Promise<boolean> {
  return (await run('sh', ['-c', `command -v ${cmd}`])).code === 0
}

const upstream = await startHttpsUpstream()
const resolver = fakeResolver({
  'www.allowed.test': ['127.0.0.1'],
  'api.allowed.test': ['127.0.0.1'],
  // ::1 has no upstream listening (it binds 127.0.0.1): refused, then 127.0.0.1 wins.
  'v6first.allowed.test': ['::1', '127.0.0.1'],
  // Nothing listens on 127.0.0.2: refused, then the next address.
  'deadfirst.allowed.test': ['127.0.0.2', '127.0.0.1'],
  'unreachable.allowed.test': ['127.0.0.2', '127.0.0.3'],
  'private.allowed.test': ['10.0.0.1', '127.0.0.1', '::1', 'fe80::1'],
})
const p = await startProxy({ sni: { upstreamPort: upstream.port }, allow: ['*.allowed.test'], resolver })
t.teardown(async () => {
  await p.stop()
  await new Promise((r) => upstream.server.close(r))
})

function tlsRequest(servername: string, request: string): Promise<{ authorized: boolean; body: string; error: string | null }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port: p.port, servername, ca: ca.cert })
    let body = ''
    let authorized = false
    socket.on('secureConnect', () => {
      authorized = socket.authorized
      socket.end(request)
    })
    socket.on('data', (c: Buffer) => (body += c.toString()))
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ authorized, body, error: err.code ?? err.message }))
    socket.on('close', () => resolve({ authorized, body, error: null }))
  })
}

t.test('Node tls: handshake completes, certificate verified, data both ways', async (t) => {
  for (const name of ['www.allowed.test', 'api.allowed.test']) {
    const body = 'x'.repeat(100_000)
    const r = await tlsRequest(name, `POST /echo HTTP/1.1\r\nHost: ${name}\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    t.equal(r.error, null, `${name}: no error`)
    t.ok(r.authorized, `${name}: the certificate for ${name} verified against the test CA`)
    t.ok(r.body.endsWith(body), `${name}: 100 kB echoed back`)
    const get = await tlsRequest(name, `GET / HTTP/1.1\r\nHost: ${name}\r\n\r\n`)
    t.ok(get.body.endsWith(`hello from ${name}`), `${name}: upstream saw SNI ${name}`)
  }
  t.ok((await p.metric('egressd_sni_bytes_total{direction="upstream"}')) > 200_000)
  t.ok((await p.metric('egressd_sni_bytes_total{direction="downstream"}')) > 200_000)
})

t.test('a blocked name through Node tls: reset, no upstream connection', async (t) => {
  const before = upstream.accepted()
  const r = await tlsRequest('blocked.test', 'GET / HTTP/1.1\r\n\r\n')
  t.equal(r.error, 'ECONNRESET')
  t.equal(upstream.accepted(), before)
})

t.test('address fallback: IPv6 first, then IPv4; a dead address first', async (t) => {
  for (const name of ['v6first.allowed.test', 'deadfirst.allowed.test']) {
    const r = await tlsRequest(name, `GET / HTTP/1.1\r\nHost: ${name}\r\n\r\n`)
    t.equal(r.error, null, `${name}: no error`)
    t.ok(r.body.endsWith(`hello from ${name}`), `${name}: reached the upstream`)
  }
  const before = await p.metric('egressd_sni_upstream_errors_total{reason="refused"}')
  const r = await tlsRequest('unreachable.allowed.test', 'GET / HTTP/1.1\r\n\r\n')
  t.equal(r.error, 'ECONNRESET', 'every address refused: the client is reset')
  t.equal(await p.metric('egressd_sni_upstream_errors_total{reason="refused"}'), before + 1)
  const lookup = await tlsRequest('nxdomain.allowed.test', 'GET / HTTP/1.1\r\n\r\n')
  t.equal(lookup.error, 'ECONNRESET', 'a name that does not resolve: reset')
  t.equal(await p.metric('egressd_sni_upstream_errors_total{reason="resolve"}'), 1)
})

t.test('openssl s_client', { skip: (await have('openssl')) ? false : 'openssl is not installed' }, async (t) => {
  const args = (name: string) => ['s_client', '-connect', `127.0.0.1:${p.port}`, '-servername', name, '-CAfile', caFile, '-verify_return_error', '-brief']
  // -ign_eof: keep reading after stdin ends, until the server closes (Connection: close).
  const ok = await run('openssl', [...args('www.allowed.test'), '-ign_eof'], 'GET / HTTP/1.1\r\nHost: www.allowed.test\r\nConnection: close\r\n\r\n')
  t.equal(ok.code, 0, 'allowed: handshake')
  t.match(ok.stderr, /Verification: OK/)
  t.match(ok.stdout, /hello from www\.allowed\.test/)
  const before = upstream.accepted()
  const blocked = await run('openssl', args('blocked.test'))
  t.not(blocked.code, 0, 'blocked: no handshake')
  t.match(blocked.stderr, /errno=104|Connection reset by peer/, 'blocked: connection reset')
  t.equal(upstream.accepted(), before)
})

t.test('curl --connect-to', { skip: (await have('curl')) ? false : 'curl is not installed' }, async (t) => {
  const args = (name: string) => ['-sS', '--max-time', '8', '--connect-to', `${name}:443:127.0.0.1:${p.port}`, '--cacert', caFile, `https://${name}/`]
  const ok = await run('curl', args('api.allowed.test'))
  t.equal(ok.code, 0, ok.stderr)
  t.equal(ok.stdout, 'hello from api.allowed.test')
  const blocked = await run('curl', args('blocked.test'))
  t.equal(blocked.code, 35, 'blocked: TLS connect error')
  t.match(blocked.stderr, /reset by peer|SSL_ERROR_SYSCALL/)
})

t.test('private destinations are refused unless allowed', async (t) => {
  const raw = await startRawUpstream({ reply: 'pong', endAfterReply: true, expect: 1 })
  const strict = await startProxy({
    sni: { upstreamPort: raw.port, allowPrivateDestinations: false },
    allow: ['*.allowed.test'],
    resolver,
  })
  const out = await rawExchange(strict.port, buildClientHello({ sni: 'private.allowed.test' }))
  t.equal(out.error, 'ECONNRESET')
  t.equal(raw.accepted, 0)
  t.equal(await strict.metric('egressd_sni_upstream_errors_total{reason="private_destination"}'), 1)
  t.equal(await strict.metric('egressd_sni_connections_total{verdict="upstream_error"}'), 1)
  t.match(strict.logs.find((l) => l.verdict === 'upstream_error'), { name: 'private.allowed.test', reason: 'private_destination' })
  // The same name with private destinations allowed reaches 127.0.0.1.
  strict.proxy.update({ ...strict.proxy.policy, settings: { ...strict.proxy.policy.settings, allowPrivateDestinations: true } })
  const ok = await rawExchange(strict.port, buildClientHello({ sni: 'private.allowed.test' }))
  t.equal(ok.received.toString(), 'pong')
  await strict.stop()
  await raw.close()
})
