/**
 * `dns.upstreams` items as people write them for dnsmasq, unbound, Blocky or AdGuard:
 * `9.9.9.9`, `[2620:fe::fe]` and `2620:fe::fe` mean port 53; `9.9.9.9:5353` and
 * `[2620:fe::fe]:5353` name the port; `udp://9.9.9.9` and `dns://9.9.9.9` are plain DNS
 * (UDP, TCP when an answer is truncated). Encrypted upstreams:
 * `tls://IP[:853][#auth-name]` is DNS over TLS (RFC 7858; Blocky's `tcp-tls:` too), the
 * certificate checked against `auth-name`, or against the address without one;
 * `https://host[:port][/path]#IP` is DNS over HTTPS (RFC 8484), `IP` the bootstrap
 * address of `host`, needed because egressd cannot ask itself; a URL whose host is an
 * address needs none. Schemes egressd does not speak get a message naming the scheme,
 * not an address error. Pure.
 */
import { ipFamily } from '../net/address.js'
import { formatHostPort, parseHostPort, type HostPort } from '../net/host-port.js'

/** An upstream resolver: where to send (`host`, `port`) and how. */
export interface Upstream extends HostPort {
  /** Absent: plain DNS (UDP, TCP after a truncated answer). */
  readonly transport?: 'tls' | 'https'
  /** The name the certificate must carry (TLS SNI too); absent: the address itself. */
  readonly tlsName?: string
  /** https: `:authority` (the URL's host[:port]) and `:path` (with its query). */
  readonly authority?: string
  readonly path?: string
  /** As written in the configuration: the `upstream` label of the metrics and logs. */
  readonly label?: string
}

/** The upstream as configured (metrics label, logs); `ip:port` for a plain one built in code. */
export function upstreamLabel(u: Upstream): string {
  return u.label ?? formatHostPort(u)
}

/** Schemes that mean plain DNS, stripped before the address is read. */
const PLAIN = new Set(['udp', 'dns', 'tcp+udp'])
/** Schemes that mean DNS over TLS (Blocky writes `tcp-tls:`). */
const TLS = new Set(['tls', 'tcp-tls'])

/** Schemes egressd does not speak, with what they are. */
const UNSUPPORTED: Record<string, string> = {
  h3: 'DNS over HTTP/3',
  quic: 'DNS over QUIC',
  sdns: 'DNS stamps',
  tcp: 'TCP-only upstreams; egressd asks over UDP and retries over TCP when an answer is truncated',
}

/** A host name as certificates carry it: LDH labels, at most 253 characters. */
const HOST_NAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i

/**
 * A `dns.upstreams` item: the address and port, or an error message. `defaultPort` (53)
 * is the port of an address written without one. An IPv6 address with a port needs
 * brackets (`[::1]:5353`): `::1:5353` is itself an IPv6 address and means port 53.
 */
export function parseUpstream(text: string, defaultPort = 53): Upstream | string {
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
    if (TLS.has(scheme)) return parseTls(text, rest)
    if (scheme === 'https' && m[0].endsWith('//')) return parseHttps(text, rest)
    const what = UNSUPPORTED[scheme]
    return `${scheme}:// upstreams are not supported (${what ?? 'unknown scheme'}); ` +
      'write ip, ip:port, tls://ip#name or https://host/dns-query#ip, e.g. 9.9.9.9, tls://9.9.9.9#dns.quad9.net or https://dns.quad9.net/dns-query#9.9.9.9'
  }
  const hash = text.indexOf('#')
  if (hash >= 0) {
    const at = text.indexOf('@')
    if (at >= 0 && at < hash) {
      return `"${text}" is unbound's DNS over TLS form; write tls://${bracketed(text.slice(0, at))}:${text.slice(at + 1, hash)}#${text.slice(hash + 1)} here`
    }
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

/** `tls://IP[:port][#auth-name]`, port 853 by default. */
function parseTls(text: string, rest: string): Upstream | string {
  const hash = rest.indexOf('#')
  const addr = hash < 0 ? rest : rest.slice(0, hash)
  const name = hash < 0 ? undefined : rest.slice(hash + 1)
  if (name !== undefined && !HOST_NAME.test(name)) return `"${text}": "${name}" after "#" is not a host name (the name the resolver's certificate carries, e.g. tls://9.9.9.9#dns.quad9.net)`
  if (/^[a-z][a-z0-9+.-]*:/i.test(addr) && ipFamily(addr) === 0) return `"${text}" has two schemes`
  if (addr.includes('/')) return `"${text}": a DNS over TLS upstream has no path; write tls://ip[:port][#name]`
  const bare = addr.startsWith('[') ? addr.slice(1, addr.indexOf(']')) : addr.replace(/:[0-9]*$/, '')
  if (ipFamily(bare) === 0 && ipFamily(addr) === 0 && !/^[0-9.]+$/.test(bare) && HOST_NAME.test(bare)) {
    return `"${text}": write the resolver's address, and its name after "#": tls://ADDRESS#${bare} (egressd does not look up names to find its resolvers)`
  }
  const hp = parseUpstream(addr, 853)
  if (typeof hp === 'string') return hp.replaceAll(`"${addr}"`, `"${text}"`)
  return { ...hp, transport: 'tls', ...(name === undefined ? {} : { tlsName: name.replace(/\.$/, '').toLowerCase() }), label: text }
}

/**
 * `https://host[:port][/path]#IP`: `host` is the name checked against the certificate and
 * sent as `:authority`; `IP` (after "#", as AdGuard and Blocky users pair a DoH URL
 * with a bootstrap address) is where egressd connects. Without a path: `/dns-query`.
 * An RFC 8484 URI template's `{?dns}` is dropped (egressd POSTs).
 */
function parseHttps(text: string, rest: string): Upstream | string {
  const hash = rest.indexOf('#')
  const bootstrap = hash < 0 ? undefined : rest.slice(hash + 1)
  let url = hash < 0 ? rest : rest.slice(0, hash)
  url = url.replace(/\{\?dns\}$/, '')
  const slash = url.indexOf('/')
  const authority = slash < 0 ? url : url.slice(0, slash)
  const path = slash < 0 ? '/dns-query' : url.slice(slash)
  if (!/^\/[\x21-\x7e]*$/.test(path)) return `"${text}": the path "${path}" must be printable ASCII without spaces`
  if (authority.includes('@')) return `"${text}": user information in the URL is not supported`
  // host[:port], IPv6 in brackets.
  let host: string
  let port = 443
  const m = /^(\[[^\]]*\]|[^:]*)(?::([0-9]{1,5}))?$/.exec(authority)
  if (m === null) return `"${text}": "${authority}" is not host[:port]`
  host = m[1]!
  if (m[2] !== undefined) {
    port = Number(m[2])
    if (port < 1 || port > 65535) return `"${text}": port ${m[2]} is not 1-65535`
  }
  if (host.startsWith('[')) {
    host = host.slice(1, -1)
    if (ipFamily(host) !== 6) return `"${text}": "${host}" is not an IPv6 address`
  }
  const hostFamily = ipFamily(host)
  let address: string
  if (hostFamily !== 0) {
    if (bootstrap !== undefined) return `"${text}": the URL already names the address ${host}; leave out "#${bootstrap}"`
    address = host
  } else {
    if (!HOST_NAME.test(host) || /^[0-9.]+$/.test(host)) return `"${text}": "${host}" is not a host name or IP address`
    if (bootstrap === undefined || bootstrap === '') {
      return `"${text}": write the address of ${host} after "#", e.g. https://${authority}${path}#192.0.2.53 (egressd cannot look up its own resolver's name)`
    }
    address = bootstrap.startsWith('[') && bootstrap.endsWith(']') ? bootstrap.slice(1, -1) : bootstrap
    if (ipFamily(address) === 0) return `"${text}": "${bootstrap}" after "#" is not an IP address (the bootstrap address of ${host})`
  }
  const family = ipFamily(address) as 4 | 6
  return {
    host: address,
    port,
    family,
    transport: 'https',
    ...(hostFamily === 0 ? { tlsName: host.replace(/\.$/, '').toLowerCase() } : {}),
    authority: authority.toLowerCase(),
    path,
    label: text,
  }
}
