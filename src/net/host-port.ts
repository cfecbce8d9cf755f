import { ipFamily } from './address.js'

/** `host:port`, IPv6 written `[::1]:5353`; `host` holds the bare address. */
export interface HostPort {
  readonly host: string
  readonly port: number
  readonly family: 4 | 6
}

/**
 * `host:port` with IPv6 in brackets (`[::1]:5353`), as listen and upstream addresses are
 * written in the configuration. Host names are refused. Returns an error message or the value.
 */
export function parseHostPort(text: string): HostPort | string {
  let host: string
  let portText: string
  if (text.startsWith('[')) {
    const close = text.indexOf(']')
    if (close < 0 || text[close + 1] !== ':') return `"${text}" is not [ipv6]:port`
    host = text.slice(1, close)
    portText = text.slice(close + 2)
    if (ipFamily(host) !== 6) return `"${host}" in "${text}" is not an IPv6 address`
  } else {
    const colon = text.lastIndexOf(':')
    if (colon < 0) return `"${text}" has no port; write host:port, e.g. 127.0.0.1:5353`
    host = text.slice(0, colon)
    portText = text.slice(colon + 1)
    if (host.includes(':')) return `"${text}": write IPv6 addresses in brackets, e.g. [::1]:5353`
    if (ipFamily(host) !== 4) return `"${host}" in "${text}" is not an IPv4 address (host names are not accepted for listen or upstream addresses)`
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) return `port "${portText}" in "${text}" is not 0-65535`
  return { host, port: Number(portText), family: ipFamily(host) as 4 | 6 }
}

export function formatHostPort(hp: HostPort): string {
  return hp.family === 6 ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`
}
