/**
 * Issue #13 items 3 and 4: upstreams as people write them for dnsmasq and unbound (a
 * bare address means port 53; a scheme egressd does not speak is named), and an upstream
 * that is one of egressd's own listeners (a resolver loop) is an error.
 */
import t from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigErrors } from '../../src/errors.js'
import { parseConfig, type LoadOptions } from '../../src/config/load.js'
import { hostAddresses, isOwnListener } from '../../src/config/resolver-loop.js'
import { parseUpstream } from '../../src/config/upstream.js'
import { parseHostPort, type HostPort } from '../../src/net/host-port.js'
import { createTestCa } from '../helpers/certs.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-upstreams-'))
const resolvConf = join(dir, 'resolv.conf')
writeFileSync(resolvConf, 'nameserver 192.0.2.53\n')
// This host, as the resolver-loop check sees it, fixed for the test.
const opts: LoadOptions = { resolvConf, localPresetsDir: null, hostAddresses: ['192.168.7.2', 'fd00::7'] }

function errorsOf(text: string, o: LoadOptions = opts): string[] {
  try {
    parseConfig('u.yaml', text, o)
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors.map((x) => x.message)
    throw e
  }
  return []
}
const hp = (text: string) => parseHostPort(text) as HostPort

t.test('a bare address means port 53, bracketed or not; a port is written after ":"', async (t) => {
  t.same(parseUpstream('9.9.9.9'), { host: '9.9.9.9', port: 53, family: 4 })
  t.same(parseUpstream('[2620:fe::fe]'), { host: '2620:fe::fe', port: 53, family: 6 })
  t.same(parseUpstream('2620:fe::fe'), { host: '2620:fe::fe', port: 53, family: 6 })
  t.same(parseUpstream('::1:5353'), { host: '::1:5353', port: 53, family: 6 }, 'an IPv6 address with a port needs brackets')
  t.same(parseUpstream('9.9.9.9:5353'), { host: '9.9.9.9', port: 5353, family: 4 })
  t.same(parseUpstream('[2620:fe::fe]:5353'), { host: '2620:fe::fe', port: 5353, family: 6 })
  t.same(parseUpstream('udp://9.9.9.9'), { host: '9.9.9.9', port: 53, family: 4 }, 'udp:// is plain DNS')
  t.same(parseUpstream('dns://[2620:fe::fe]:5353'), { host: '2620:fe::fe', port: 5353, family: 6 })
  t.same(parseUpstream('tcp+udp:9.9.9.9'), { host: '9.9.9.9', port: 53, family: 4 }, "Blocky's plain form")
  const { config } = parseConfig('u.yaml', 'dns:\n  upstreams: ["9.9.9.9", "[2620:fe::fe]", "2620:fe::9"]\n', opts)
  t.same(config.dns.upstreams.map((u) => `${u.host} ${u.port}`), ['9.9.9.9 53', '2620:fe::fe 53', '2620:fe::9 53'])
})

t.test('schemes egressd does not speak are named, not reported as "write IPv6 addresses in brackets"', async (t) => {
  const forms = 'write ip, ip:port, tls://ip#name or https://host/dns-query#ip, e.g. 9.9.9.9, tls://9.9.9.9#dns.quad9.net or https://dns.quad9.net/dns-query#9.9.9.9'
  t.equal(parseUpstream('quic://dns.adguard.com'), `quic:// upstreams are not supported (DNS over QUIC); ${forms}`)
  t.match(parseUpstream('tcp://9.9.9.9'), /^tcp:\/\/ upstreams are not supported \(TCP-only upstreams; egressd asks over UDP and retries over TCP/)
  t.match(parseUpstream('gopher://9.9.9.9'), /^gopher:\/\/ upstreams are not supported \(unknown scheme\)/)
  t.equal(parseUpstream('9.9.9.9#5353'), '"9.9.9.9#5353": write the port after ":" (dnsmasq\'s 9.9.9.9#5353 is 9.9.9.9:5353 here)')
  t.equal(parseUpstream('2620:fe::fe@5353'), '"2620:fe::fe@5353": write the port after ":" (unbound\'s 2620:fe::fe@5353 is [2620:fe::fe]:5353 here)')
  t.equal(parseUpstream('9.9.9.9@853#dns.quad9.net'), '"9.9.9.9@853#dns.quad9.net" is unbound\'s DNS over TLS form; write tls://9.9.9.9:853#dns.quad9.net here')
  t.match(parseUpstream('dns.quad9.net'), /is not an IP address \(upstreams are addresses/)
  t.match(parseUpstream('fe80::1%eth0'), /zone-scoped addresses/)
  t.match(parseUpstream('9.9.9.9:0'), /port 0/)
  t.match(parseUpstream('udp://tls://9.9.9.9'), /two schemes/)
  t.match(parseUpstream('tls://udp://9.9.9.9'), /two schemes/)
  t.same(errorsOf('dns:\n  upstreams: ["quic://9.9.9.9", 9.9.9.9, [1]]\n'), [
    `u.yaml:2:15: dns.upstreams: quic:// upstreams are not supported (DNS over QUIC); ${forms}`,
    'u.yaml:2:42: dns.upstreams must be a string, not a list',
  ], 'file:line:col; an unquoted 9.9.9.9 is YAML text and accepted')
})

t.test('DNS over TLS: tls://IP[:853][#auth-name], Blocky\'s tcp-tls: too', async (t) => {
  t.same(parseUpstream('tls://9.9.9.9'), { host: '9.9.9.9', port: 853, family: 4, transport: 'tls', label: 'tls://9.9.9.9' }, 'no name: the address is checked')
  t.same(parseUpstream('tls://9.9.9.9:8853#dns.Quad9.net'), { host: '9.9.9.9', port: 8853, family: 4, transport: 'tls', tlsName: 'dns.quad9.net', label: 'tls://9.9.9.9:8853#dns.Quad9.net' })
  t.same(parseUpstream('tls://[2620:fe::fe]:853#dns.quad9.net'), { host: '2620:fe::fe', port: 853, family: 6, transport: 'tls', tlsName: 'dns.quad9.net', label: 'tls://[2620:fe::fe]:853#dns.quad9.net' })
  t.same(parseUpstream('tls://2620:fe::fe#dns.quad9.net'), { host: '2620:fe::fe', port: 853, family: 6, transport: 'tls', tlsName: 'dns.quad9.net', label: 'tls://2620:fe::fe#dns.quad9.net' })
  t.has(parseUpstream('tcp-tls:1.1.1.1#cloudflare-dns.com'), { host: '1.1.1.1', port: 853, transport: 'tls', tlsName: 'cloudflare-dns.com' })
  t.equal(parseUpstream('tls://dns.quad9.net'), '"tls://dns.quad9.net": write the resolver\'s address, and its name after "#": tls://ADDRESS#dns.quad9.net (egressd does not look up names to find its resolvers)')
  t.match(parseUpstream('tls://9.9.9.9#not a name'), /"not a name" after "#" is not a host name/)
  t.match(parseUpstream('tls://9.9.9.9/dns-query'), /has no path/)
  t.match(parseUpstream('tls://9.9.9.9:0'), /port 0/)
})

t.test('DNS over HTTPS: https://host[:port][/path]#bootstrap-ip', async (t) => {
  t.same(parseUpstream('https://dns.quad9.net/dns-query#9.9.9.9'), {
    host: '9.9.9.9', port: 443, family: 4, transport: 'https', tlsName: 'dns.quad9.net', authority: 'dns.quad9.net', path: '/dns-query',
    label: 'https://dns.quad9.net/dns-query#9.9.9.9',
  })
  t.has(parseUpstream('https://doh.example:8443/q?x=1#[2001:db8::53]'), { host: '2001:db8::53', port: 8443, family: 6, authority: 'doh.example:8443', path: '/q?x=1' })
  t.has(parseUpstream('https://doh.example{?dns}#192.0.2.1'), { path: '/dns-query' }, 'no path: /dns-query; an RFC 8484 template is dropped')
  t.has(parseUpstream('https://doh.example/dns-query{?dns}#192.0.2.1'), { path: '/dns-query' })
  const literal = parseUpstream('https://1.1.1.1/dns-query')
  t.has(literal, { host: '1.1.1.1', port: 443, transport: 'https', authority: '1.1.1.1' }, 'an address in the URL needs no bootstrap')
  t.notOk(typeof literal !== 'string' && 'tlsName' in literal, 'and is itself what the certificate must carry')
  t.has(parseUpstream('https://[2606:4700::1111]/dns-query'), { host: '2606:4700::1111', family: 6 })
  t.equal(parseUpstream('https://dns.quad9.net/dns-query'),
    '"https://dns.quad9.net/dns-query": write the address of dns.quad9.net after "#", e.g. https://dns.quad9.net/dns-query#192.0.2.53 (egressd cannot look up its own resolver\'s name)')
  t.match(parseUpstream('https://dns.quad9.net/dns-query#dns.quad9.net'), /"dns.quad9.net" after "#" is not an IP address/)
  t.match(parseUpstream('https://1.1.1.1/dns-query#1.0.0.1'), /already names the address 1.1.1.1/)
  t.match(parseUpstream('https://doh.example:99999/#1.2.3.4'), /port 99999/)
  t.match(parseUpstream('https://user@doh.example/#1.2.3.4'), /user information/)
  t.match(parseUpstream('https://doh.example/a b#1.2.3.4'), /printable ASCII/)
})

t.test('plain and encrypted upstreams mixed; errors at file:line:col; dns.upstream_ca_file read at load', async (t) => {
  const { config } = parseConfig('u.yaml', 'dns:\n  upstreams: ["9.9.9.9", "tls://1.1.1.1#one.one.one.one", "https://dns.google/dns-query#8.8.8.8"]\n', opts)
  t.same(config.dns.upstreams.map((u) => u.transport ?? 'udp'), ['udp', 'tls', 'https'])
  t.equal(config.dns.upstreamCaFile, '', 'the system store by default')
  t.same(errorsOf('dns:\n  upstreams:\n    - 9.9.9.9\n    - tls://dns.quad9.net\n'), [
    'u.yaml:4:7: dns.upstreams: "tls://dns.quad9.net": write the resolver\'s address, and its name after "#": tls://ADDRESS#dns.quad9.net (egressd does not look up names to find its resolvers)',
  ])
  writeFileSync(join(dir, 'ca.pem'), createTestCa().cert)
  const loaded = parseConfig(join(dir, 'c.yaml'), 'dns:\n  upstreams: ["tls://1.1.1.1"]\n  upstream_ca_file: ca.pem\n', opts)
  t.equal(loaded.config.dns.upstreamCaFile, join(dir, 'ca.pem'), 'relative to the configuration file')
  t.same(errorsOf('dns:\n  upstreams: ["tls://1.1.1.1"]\n  upstream_ca_file: /nonexistent/ca.pem\n'), ['u.yaml:3:21: dns.upstream_ca_file: cannot read /nonexistent/ca.pem: ENOENT'])
  writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n')
  t.match(errorsOf(`dns:\n  upstream_ca_file: ${join(dir, 'junk.pem')}\n`), [/^u\.yaml:2:21: dns\.upstream_ca_file: .*holds no PEM certificate/])
  const leaf = createTestCa().issue(['dns.test'])
  writeFileSync(join(dir, 'leaf.pem'), leaf.cert)
  t.match(errorsOf(`dns:\n  upstream_ca_file: ${join(dir, 'leaf.pem')}\n`), [/certificate 1 \(CN=dns.test\) is not a CA certificate/])
})

t.test('the resolver-loop check for encrypted upstreams: own DNS listener (fails, named) and own SNI listener (a loop)', async (t) => {
  t.same(errorsOf('dns:\n  listen: ["127.0.0.1:853"]\n  upstreams: ["tls://127.0.0.1"]\n'), [
    'u.yaml:3:15: dns.upstreams: "tls://127.0.0.1" is egressd\'s own listener dns.listen "127.0.0.1:853"; it speaks plain DNS, not DNS over TLS, so every try would fail; name the resolver egressd should ask',
  ])
  t.same(errorsOf('sni:\n  listen: ["0.0.0.0:443"]\ndns:\n  upstreams: ["https://doh.example/dns-query#192.168.7.2"]\n'), [
    'u.yaml:4:15: dns.upstreams: "https://doh.example/dns-query#192.168.7.2" is egressd\'s own SNI listener sni.listen "0.0.0.0:443" (192.168.7.2 is an address of this host);' +
      ' the proxy would look the resolver\'s name up through egressd itself: a resolver loop; name the resolver egressd should ask',
  ])
  t.same(errorsOf('dns:\n  listen: ["127.0.0.1:53"]\n  upstreams: ["tls://127.0.0.1:853#dot.test", "https://doh.test/dns-query#127.0.0.1"]\n'), [], 'other ports are other servers')
})

t.test('listen addresses still need a port', async (t) => {
  t.same(errorsOf('dns:\n  listen: ["127.0.0.1"]\n'), ['u.yaml:2:12: dns.listen: "127.0.0.1" has no port; write host:port, e.g. 127.0.0.1:5353'])
})

t.test('isOwnListener: the same address and port, or a wildcard listener and an address of this host', async (t) => {
  const local = new Set(['192.168.7.2', 'fd00::7'])
  const cases: [string, string, boolean][] = [
    ['127.0.0.1:53', '127.0.0.1:53', true],
    ['127.0.0.1:53', '127.0.0.1:5353', false],
    ['127.0.0.2:53', '127.0.0.1:53', false],
    ['[::ffff:127.0.0.1]:53', '127.0.0.1:53', true],
    ['127.0.0.53:53', '0.0.0.0:53', true],
    ['192.168.7.2:53', '0.0.0.0:53', true],
    ['192.168.7.3:53', '0.0.0.0:53', false],
    ['[::1]:53', '0.0.0.0:53', false],
    ['[::1]:53', '[::]:53', true],
    ['[fd00::7]:53', '[::]:53', true],
    ['192.168.7.2:53', '[::]:53', true],
    ['9.9.9.9:53', '[::]:53', false],
    ['0.0.0.0:53', '127.0.0.1:53', true],
    ['127.0.0.1:0', '127.0.0.1:0', false],
    ['[0:0:0:0:0:0:0:1]:53', '[::1]:53', true],
  ]
  for (const [u, l, loop] of cases) t.equal(isOwnListener(hp(u), hp(l), local), loop, `${u} → ${l}`)
  const here = hostAddresses()
  t.ok(here.has('127.0.0.1'), 'os.networkInterfaces() lists loopback')
})

t.test('a resolver loop is an error at the upstream, or at the listener when the upstreams come from resolv.conf', async (t) => {
  const tail = 'every query egressd forwards would come back to it: a resolver loop'
  t.same(errorsOf('dns:\n  listen: ["127.0.0.1:53"]\n  upstreams: ["127.0.0.1"]\n'), [
    `u.yaml:3:15: dns.upstreams: "127.0.0.1" is egressd's own listener dns.listen "127.0.0.1:53"; ${tail}; name the resolver egressd should ask`,
  ])
  t.same(errorsOf('dns:\n  listen: ["0.0.0.0:53", "[::]:5353"]\n  upstreams: ["9.9.9.9", "192.168.7.2"]\n'), [
    `u.yaml:3:26: dns.upstreams: "192.168.7.2" is egressd's own listener dns.listen "0.0.0.0:53" (192.168.7.2 is an address of this host); ${tail}; name the resolver egressd should ask`,
  ])
  t.same(errorsOf('dns:\n  listen: ["[::]:53"]\n  upstreams: ["[::1]"]\n'), [
    `u.yaml:3:15: dns.upstreams: "[::1]" is egressd's own listener dns.listen "[::]:53" (::1 is an address of this host); ${tail}; name the resolver egressd should ask`,
  ])
  const loopConf = join(dir, 'loop-resolv.conf')
  writeFileSync(loopConf, 'nameserver 127.0.0.53\n')
  t.same(errorsOf('dns:\n  listen: ["127.0.0.1:5353", "0.0.0.0:53"]\n', { ...opts, resolvConf: loopConf }), [
    `u.yaml:2:30: dns.upstreams is not set, so the nameservers of ${loopConf} are used, and "127.0.0.53:53" among them is egressd's own listener` +
      ` dns.listen "0.0.0.0:53" (127.0.0.53 is an address of this host); ${tail}; set dns.upstreams to the resolver egressd should ask`,
  ])
  t.same(errorsOf('dns:\n  listen: ["127.0.0.1:5353"]\n  upstreams: ["127.0.0.1:53"]\n'), [], 'another port is another server')
  t.same(errorsOf('dns:\n  listen: ["0.0.0.0:53"]\n  upstreams: ["192.168.7.9"]\n'), [], 'another host on the segment')
})
