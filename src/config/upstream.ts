/**
 * `dns.upstreams` items as people write them for dnsmasq, unbound, Blocky or AdGuard:
 * `9.9.9.9`, `[2620:fe::fe]` and `2620:fe::fe` mean port 53; `9.9.9.9:5353` and
 * `[2620:fe::fe]:5353` name the port; `udp://9.9.9.9` and `dns://9.9.9.9` are plain DNS,
 * which is what egressd speaks to upstreams (UDP, TCP when an answer is truncated).
 * Schemes egressd does not speak get a message naming the scheme, not an address error.
 * Pure.
 */
import { ipFamily } from '../net/address.js'
import { parseHostPort, type HostPort } from '../net/host-port.js'

/** Schemes that mean plain DNS, stripped before the address is read. */
const PLAIN = new Set(['udp', 'dns', 'tcp+udp'])

/** Schemes egressd does not speak, with what they are. */
const UNSUPPORTED: Record<string, string> = {
  tls: 'DNS over TLS: issue #14',
  'tcp-tls': 'DNS over TLS: issue #14',
  https: 'DNS over HTTPS: issue #14',
  h3: 'DNS over HTTP/3',
  quic: 'DNS over QUIC',
  sdns: 'DNS stamps',
  tcp: 'TCP-only upstreams; egressd asks over UDP and retries over TCP when an answer is truncated',
}

/**
 * A `dns.upstreams` item: the address and port, or an error message. `defaultPort` (53)
 * is the port of an address written without one. An IPv6 address with a port needs
 * brackets (`[::1]:5353`): `::1:5353` is itself an IPv6 address and means port 53.
 */
export function parseUpstream(text: string, defaultPort = 53): HostPort | string {
  // `tls://1.1.1.1`, and Blocky's `tcp-tls:1.1.1.1` / `tcp+udp:1.1.1.1` (no `//`). No
  // IPv6 address starts with one of these words: they hold letters past `f`.
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text) ?? /^(tcp\+udp|tcp-tls|udp|tcp|https|tls|dns):(?!\/)/i.exec(text)
  if (m !== null) {
    const scheme = m[1]!.toLowerCase()
    const rest = text.slice(m[0].length)
    if (PLAIN.has(scheme)) {
      if (/^[a-z][a-z0-9+.-]*:\/\//i.test(rest)) return `"${text}" has two schemes`
      const hp = parseUpstream(rest, defaultPort)
      return typeof hp === 'string' ? hp.replaceAll(`"${rest}"`, `"${text}"`) : hp
    }
    const what = UNSUPPORTED[scheme]
    return `${scheme}:// upstreams are not supported${what?.includes('issue') ? ' yet' : ''} (${what ?? 'unknown scheme'}); ` +
      'write the address of a plain DNS resolver as ip or ip:port, e.g. 9.9.9.9 or [2620:fe::fe]:53'
  }
  const hash = text.indexOf('#')
  if (hash >= 0) {
    const at = text.indexOf('@')
    if (at >= 0 && at < hash) return `"${text}" names a TLS server name after "#" (unbound's DNS over TLS form, issue #14); write ip or ip:port of a plain DNS resolver`
    return `"${text}": write the port after ":" (dnsmasq's ${text} is ${bracketed(text.slice(0, hash))}:${text.slice(hash + 1)} here)`
  }
  const at = text.indexOf('@')
  if (at >= 0) return `"${text}": write the port after ":" (unbound's ${text} is ${bracketed(text.slice(0, at))}:${text.slice(at + 1)} here)`
  // Refused as resolv-conf.ts skips them (ipFamily takes a zone id as part of an IPv6 address).
  if (text.includes('%')) return `"${text}": zone-scoped addresses (fe80::1%eth0) are not supported; use a global or unique-local address`
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  const family = ipFamily(bare)
  if (family === 6 || (family === 4 && bare === text)) return { host: bare, port: defaultPort, family }
  if (!text.includes(':') && !text.startsWith('[')) {
    return `"${text}" is not an IP address (upstreams are addresses: egressd does not look up names to find its resolvers)`
  }
  const hp = parseHostPort(text)
  if (typeof hp !== 'string' && hp.port === 0) return `port 0 in "${text}" is not a port a resolver answers on`
  return hp
}

function bracketed(host: string): string {
  return ipFamily(host) === 6 ? `[${host}]` : host
}
