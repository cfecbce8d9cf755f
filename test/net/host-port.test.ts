import t from 'tap'
import { formatHostPort, parseHostPort, type HostPort } from '../../src/net/host-port.js'

t.test('parseHostPort: host:port and [v6]:port, as listen and upstream addresses are written', async (t) => {
  t.same(parseHostPort('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353, family: 4 })
  t.same(parseHostPort('[::1]:53'), { host: '::1', port: 53, family: 6 })
  t.same(parseHostPort('[::ffff:192.0.2.1]:0'), { host: '::ffff:192.0.2.1', port: 0, family: 6 })
  t.equal(parseHostPort('127.0.0.1'), '"127.0.0.1" has no port; write host:port, e.g. 127.0.0.1:5353')
  t.equal(parseHostPort('::1:53'), '"::1:53": write IPv6 addresses in brackets, e.g. [::1]:5353')
  t.equal(parseHostPort('[::1:53'), '"[::1:53" is not [ipv6]:port')
  t.equal(parseHostPort('[10.0.0.1]:53'), '"10.0.0.1" in "[10.0.0.1]:53" is not an IPv6 address')
  t.match(parseHostPort('localhost:53'), /"localhost" in "localhost:53" is not an IPv4 address \(host names are not accepted/)
  t.equal(parseHostPort('10.0.0.1:65536'), 'port "65536" in "10.0.0.1:65536" is not 0-65535')
  t.equal(parseHostPort('10.0.0.1:'), 'port "" in "10.0.0.1:" is not 0-65535')
  t.equal(parseHostPort('10.0.0.1:+53'), 'port "+53" in "10.0.0.1:+53" is not 0-65535')
})

t.test('formatHostPort round-trips', async (t) => {
  for (const text of ['127.0.0.1:5353', '[::1]:53', '[2001:db8::53]:853']) {
    t.equal(formatHostPort(parseHostPort(text) as HostPort), text)
  }
})
