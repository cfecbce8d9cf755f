import t from 'tap'
import { ListenError } from '../../src/errors.js'

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`bind ${code}`), { code })

t.test('one line: address, service, transport, reason and the usual fix', async (t) => {
  const dns53 = new ListenError('dns', 'udp', '0.0.0.0:53', 53, errno('EADDRINUSE'))
  t.match(dns53.message, /^cannot listen on 0\.0\.0\.0:53 \(dns, udp\): address already in use; another DNS server holds port 53: systemd-resolved .*dnsmasq/)
  t.equal(dns53.code, 'ELISTEN')
  t.equal(dns53.reason, 'EADDRINUSE')
  t.notOk(dns53.message.includes('\n'), 'one line')
  const priv = new ListenError('sni', 'tcp', '[::]:443', 443, errno('EACCES'))
  t.match(priv.message, /permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE/)
  t.match(new ListenError('metrics', 'tcp', '10.9.9.9:9153', 9153, errno('EADDRNOTAVAIL')).message, /no interface of this host has that address; use an address the host has/)
  t.match(new ListenError('sni', 'tcp', '127.0.0.1:8443', 8443, errno('EADDRINUSE')).message, /another process holds it; `ss -ltupn sport = :8443`/)
  const odd = new ListenError('dns', 'tcp', '127.0.0.1:5353', 5353, errno('EWEIRD'))
  t.equal(odd.hint, null)
  t.match(odd.message, /\(dns, tcp\): bind EWEIRD$/)
})
