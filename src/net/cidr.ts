/** CIDR prefixes: parsing with did-you-mean for host bits, prefix comparison, and coverage of one prefix by a set. */
import { formatIp, parseIp } from './address.js'

/** A parsed CIDR; `bits` is the prefix length, `bytes` the network address (4 or 16 bytes). */
export interface Cidr {
  readonly text: string
  readonly family: 4 | 6
  readonly bytes: Uint8Array
  readonly bits: number
}

/** `10.0.0.0/8`, `fc00::/7`, or a bare address (a /32 or /128). Returns an error message or the value. */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/')
  const addr = slash < 0 ? text : text.slice(0, slash)
  const bytes = parseIp(addr)
  if (bytes === null) return `"${text}" is not an address or CIDR (e.g. 10.0.0.0/8, fc00::/7)`
  const family = bytes.length === 4 ? 4 : 6
  const max = family === 4 ? 32 : 128
  const bitsText = slash < 0 ? String(max) : text.slice(slash + 1)
  if (!/^[0-9]{1,3}$/.test(bitsText) || Number(bitsText) > max) return `prefix length "/${bitsText}" in "${text}" is not 0-${max}`
  const bits = Number(bitsText)
  for (let i = 0; i < bytes.length * 8; i++) {
    if (i >= bits && (bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0) {
      const masked = Uint8Array.from(bytes, (b, j) => (j * 8 >= bits ? 0 : j * 8 + 8 <= bits ? b : b & (0xff << (8 - (bits - j * 8)))))
      return `"${text}" has host bits set beyond /${bits}; did you mean ${formatIp(masked, 0, bytes.length as 4 | 16)}/${bits}?`
    }
  }
  return { text, family, bytes, bits }
}

/** Whether the first `bits` bits of `a` and `b` are equal. */
export function prefixEqual(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  let i = 0
  for (; bits >= 8; bits -= 8, i++) if (a[i] !== b[i]) return false
  if (bits === 0) return true
  const mask = (0xff << (8 - bits)) & 0xff
  return ((a[i]! ^ b[i]!) & mask) === 0
}

/** Whether two CIDRs share any address (same family only). */
export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && prefixEqual(a.bytes, b.bytes, Math.min(a.bits, b.bits))
}

/** Whether the union of `by` contains every address of `c` (same family only). */
export function covered(c: Cidr, by: readonly Cidr[]): boolean {
  const same = by.filter((x) => x.family === c.family)
  return coveredBits(c.bytes, c.bits, same)
}

function coveredBits(net: Uint8Array, bits: number, by: readonly Cidr[]): boolean {
  // One CIDR containing all of it: done. Otherwise only CIDRs strictly inside it can
  // help; split in halves and require both (depth ≤ 128, and only while some
  // narrower CIDR is still inside the half being looked at).
  if (by.some((x) => x.bits <= bits && prefixEqual(net, x.bytes, x.bits))) return true
  const inside = by.filter((x) => x.bits > bits && prefixEqual(net, x.bytes, bits))
  if (inside.length === 0 || bits >= net.length * 8) return false
  const low = net.slice()
  const high = net.slice()
  high[bits >> 3]! |= 0x80 >> (bits & 7)
  return coveredBits(low, bits + 1, inside) && coveredBits(high, bits + 1, inside)
}
