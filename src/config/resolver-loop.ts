/**
 * A resolver loop: an upstream that is one of egressd's own DNS listeners. Every query
 * egressd forwards would come back to it, be forwarded again, and so on until the
 * pending-upstream bound fills and every client gets SERVFAIL. Pure but for
 * `hostAddresses()`, which reads this host's interface addresses (no socket).
 */
import { networkInterfaces } from 'node:os'
import { formatIp, isV4Mapped, parseIp } from '../net/address.js'
import type { HostPort } from '../net/host-port.js'

/** An address in one canonical text form: IPv4-mapped IPv6 as IPv4, IPv6 per RFC 5952. */
interface Canon {
  readonly family: 4 | 6
  readonly text: string
}

function canon(host: string): Canon | null {
  const b = parseIp(host)
  if (b === null) return null
  if (b.length === 16 && isV4Mapped(b)) return { family: 4, text: formatIp(b, 12, 4) }
  return b.length === 4 ? { family: 4, text: formatIp(b, 0, 4) } : { family: 6, text: formatIp(b, 0, 16) }
}

const UNSPECIFIED = new Set(['0.0.0.0', '::'])

/** Whether a packet sent to `a` reaches this host: loopback, unspecified, or an interface address. */
function isLocal(a: Canon, local: ReadonlySet<string>): boolean {
  if (UNSPECIFIED.has(a.text) || a.text === '::1' || local.has(a.text)) return true
  return a.family === 4 && a.text.startsWith('127.')
}

/**
 * Whether `upstream` is `listen`: the same port (0, an ephemeral port, never matches) and
 * the same address, or `listen` is a wildcard (`0.0.0.0`, or `::`, which with Node's
 * dual-stack default takes IPv4 too) and `upstream` is an address of this host.
 */
export function isOwnListener(upstream: HostPort, listen: HostPort, local: ReadonlySet<string>): boolean {
  if (upstream.port !== listen.port || listen.port === 0) return false
  const u = canon(upstream.host)
  const l = canon(listen.host)
  if (u === null || l === null) return false
  if (u.text === l.text) return true
  if (l.text === '0.0.0.0') return u.family === 4 && isLocal(u, local)
  if (l.text === '::') return isLocal(u, local)
  // Sent to 0.0.0.0 or ::, a packet goes to this host: it reaches a local listener of its family.
  return UNSPECIFIED.has(u.text) && u.family === l.family && isLocal(l, local)
}

/** This host's interface addresses in canonical form (zone ids dropped). */
export function hostAddresses(): Set<string> {
  const out = new Set<string>()
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      const c = canon(a.address.replace(/%.*$/, ''))
      if (c !== null) out.add(c.text)
    }
  }
  return out
}
