import { isIP } from 'node:net'
import type { Cidr, HostPort } from './types.js'

/** `host:port` with IPv6 in brackets (`[::1]:5353`). Returns an error message or the value. */
export function parseHostPort(text: string): HostPort | string {
  let host: string
  let portText: string
  if (text.startsWith('[')) {
    const close = text.indexOf(']')
    if (close < 0 || text[close + 1] !== ':') return `"${text}" is not [ipv6]:port`
    host = text.slice(1, close)
    portText = text.slice(close + 2)
    if (isIP(host) !== 6) return `"${host}" in "${text}" is not an IPv6 address`
  } else {
    const colon = text.lastIndexOf(':')
    if (colon < 0) return `"${text}" has no port; write host:port, e.g. 127.0.0.1:5353`
    host = text.slice(0, colon)
    portText = text.slice(colon + 1)
    if (host.includes(':')) return `"${text}": write IPv6 addresses in brackets, e.g. [::1]:5353`
    if (isIP(host) !== 4) return `"${host}" in "${text}" is not an IPv4 address (host names are not accepted for listen or upstream addresses)`
  }
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) return `port "${portText}" in "${text}" is not 0-65535`
  return { host, port: Number(portText), family: isIP(host) as 4 | 6 }
}

export function formatHostPort(hp: HostPort): string {
  return hp.family === 6 ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`
}

/** Address text → bytes (4 or 16). Accepts what node:net isIP accepts, without zone ids. */
export function ipToBytes(text: string): Uint8Array | null {
  const family = isIP(text)
  if (family === 4) return Uint8Array.from(text.split('.').map(Number))
  if (family !== 6) return null
  let body = text
  const lastColon = body.lastIndexOf(':')
  if (body.indexOf('.', lastColon) >= 0) {
    // Embedded dotted quad in the last 32 bits (::ffff:1.2.3.4): rewrite it as two groups.
    const q = body.slice(lastColon + 1).split('.').map(Number)
    body = body.slice(0, lastColon + 1) + (((q[0]! << 8) | q[1]!).toString(16)) + ':' + (((q[2]! << 8) | q[3]!).toString(16))
  }
  const halves = body.split('::')
  const head = halves[0] ? halves[0].split(':').map((h) => parseInt(h, 16)) : []
  const rest = halves.length > 1 && halves[1] ? halves[1].split(':').map((h) => parseInt(h, 16)) : []
  const words = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest]
  const bytes = new Uint8Array(16)
  for (let i = 0; i < 8; i++) {
    bytes[i * 2] = (words[i]! >> 8) & 0xff
    bytes[i * 2 + 1] = words[i]! & 0xff
  }
  return bytes
}

export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/')
  const addr = slash < 0 ? text : text.slice(0, slash)
  const bytes = ipToBytes(addr)
  if (bytes === null) return `"${text}" is not an address or CIDR (e.g. 10.0.0.0/8, fc00::/7)`
  const family = bytes.length === 4 ? 4 : 6
  const max = family === 4 ? 32 : 128
  const bitsText = slash < 0 ? String(max) : text.slice(slash + 1)
  if (!/^[0-9]{1,3}$/.test(bitsText) || Number(bitsText) > max) return `prefix length "/${bitsText}" in "${text}" is not 0-${max}`
  const bits = Number(bitsText)
  for (let i = 0; i < bytes.length * 8; i++) {
    if (i >= bits && (bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0) {
      return `"${text}" has host bits set beyond /${bits}; did you mean ${maskedText(bytes, bits, family)}/${bits}?`
    }
  }
  return { text, family, bytes, bits }
}

function maskedText(bytes: Uint8Array, bits: number, family: 4 | 6): string {
  const m = Uint8Array.from(bytes, (b, i) => (i * 8 >= bits ? 0 : i * 8 + 8 <= bits ? b : b & (0xff << (8 - (bits - i * 8)))))
  if (family === 4) return Array.from(m).join('.')
  const words: string[] = []
  for (let i = 0; i < 16; i += 2) words.push(((m[i]! << 8) | m[i + 1]!).toString(16))
  return words.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::')
}

/**
 * Whether an address (4 or 16 bytes) lies in one of the CIDRs. An IPv4-mapped IPv6
 * source (::ffff:a.b.c.d, what a dual-stack socket reports) is checked as IPv4.
 */
export function cidrsContain(cidrs: readonly Cidr[], addr: Uint8Array): boolean {
  let bytes = addr
  if (addr.length === 16 && isV4Mapped(addr)) bytes = addr.subarray(12)
  for (const c of cidrs) {
    if (c.bytes.length !== bytes.length) continue
    let bits = c.bits
    let i = 0
    for (; bits >= 8; i++, bits -= 8) if (c.bytes[i] !== bytes[i]) break
    if (bits >= 8) continue
    if (bits === 0 || ((c.bytes[i]! ^ bytes[i]!) & (0xff << (8 - bits)) & 0xff) === 0) return true
  }
  return false
}

function isV4Mapped(a: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (a[i] !== 0) return false
  return a[10] === 0xff && a[11] === 0xff
}
