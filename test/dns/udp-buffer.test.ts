/** The DNS UDP sockets ask for a 4 MiB receive buffer (server.ts, UDP_RECV_BUFFER), as far as the kernel allows. */
import t from 'tap'
import { readFileSync } from 'node:fs'
import type dgram from 'node:dgram'
import { UDP_RECV_BUFFER } from '../../src/dns/server.js'
import { makeConfig, startService } from './helpers.js'

t.test('UDP receive buffer: min(4 MiB, net.core.rmem_max)', async (t) => {
  const s = await startService(makeConfig())
  t.teardown(() => s.close())
  const sock = (s.svc as unknown as { server: { udp: dgram.Socket[] } }).server.udp[0]!
  let rmemMax = Infinity
  try {
    rmemMax = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'))
  } catch {
    t.comment('no /proc/sys/net/core/rmem_max')
  }
  const want = Math.min(UDP_RECV_BUFFER, rmemMax)
  // Linux reports twice what was set (its bookkeeping overhead).
  t.ok(sock.getRecvBufferSize() >= want, `SO_RCVBUF ${sock.getRecvBufferSize()} >= ${want}`)
})
