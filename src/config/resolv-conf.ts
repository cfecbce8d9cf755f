import { readFileSync } from 'node:fs'
import { ipFamily } from '../net/address.js'
import type { HostPort } from '../net/host-port.js'

/**
 * The nameservers of a resolv.conf, port 53. Zone-scoped link-local addresses
 * (`fe80::1%eth0`) are skipped: Node's dgram cannot send to them without an
 * interface-bound socket, and a gateway should name its upstreams explicitly anyway.
 */
export function readResolvConf(path = '/etc/resolv.conf'): HostPort[] {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return []
  }
  const servers: HostPort[] = []
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line)
    if (!m) continue
    if (m[1]!.includes('%')) continue
    const family = ipFamily(m[1]!)
    if (family === 4 || family === 6) servers.push({ host: m[1]!, port: 53, family })
  }
  return servers
}
