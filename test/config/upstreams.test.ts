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
  const plain = 'write the address of a plain DNS resolver as ip or ip:port, e.g. 9.9.9.9 or [2620:fe::fe]:53'
  t.equal(parseUpstream('tls://9.9.9.9'), `tls:// upstreams are not supported yet (DNS over TLS: issue #14); ${plain}`)
  t.equal(parseUpstream('https://dns.quad9.net/dns-query'), `https:// upstreams are not supported yet (DNS over HTTPS: issue #14); ${plain}`)
  t.equal(parseUpstream('tcp-tls:9.9.9.9:853'), `tcp-tls:// upstreams are not supported yet (DNS over TLS: issue #14); ${plain}`)
  t.equal(parseUpstream('quic://dns.adguard.com'), `quic:// upstreams are not supported (DNS over QUIC); ${plain}`)
  t.match(parseUpstream('tcp://9.9.9.9'), /^tcp:\/\/ upstreams are not supported \(TCP-only upstreams; egressd asks over UDP and retries over TCP/)
  t.match(parseUpstream('gopher://9.9.9.9'), /^gopher:\/\/ upstreams are not supported \(unknown scheme\)/)
  t.equal(parseUpstream('9.9.9.9#5353'), '"9.9.9.9#5353": write the port after ":" (dnsmasq\'s 9.9.9.9#5353 is 9.9.9.9:5353 here)')
  t.equal(parseUpstream('2620:fe::fe@5353'), '"2620:fe::fe@5353": write the port after ":" (unbound\'s 2620:fe::fe@5353 is [2620:fe::fe]:5353 here)')
  t.match(parseUpstream('9.9.9.9@853#dns.quad9.net'), /TLS server name .*issue #14/)
  t.match(parseUpstream('dns.quad9.net'), /is not an IP address \(upstreams are addresses/)
  t.match(parseUpstream('fe80::1%eth0'), /zone-scoped addresses/)
  t.match(parseUpstream('9.9.9.9:0'), /port 0/)
  t.match(parseUpstream('udp://tls://9.9.9.9'), /two schemes/)
  t.same(errorsOf('dns:\n  upstreams: ["tls://9.9.9.9", 9.9.9.9, [1]]\n'), [
    `u.yaml:2:15: dns.upstreams: tls:// upstreams are not supported yet (DNS over TLS: issue #14); ${plain}`,
    'u.yaml:2:41: dns.upstreams must be a string, not a list',
  ], 'file:line:col; an unquoted 9.9.9.9 is YAML text and accepted')
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
