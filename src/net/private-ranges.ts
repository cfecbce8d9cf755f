import { parseIpInto } from './address.js'

/**
 * "Private" as docs/design.md defines it: 0.0.0.0/8, 10/8, 100.64/10, 127/8, 169.254/16,
 * 172.16/12, 192.168/16, 224/4 and above; ::, ::1, fc00::/7, fe80::/10, ff00::/8; and
 * IPv4 addresses embedded in IPv6 (IPv4-mapped ::ffff:0:0/96, IPv4-compatible ::/96,
 * NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16), judged by the embedded v4.
 * Other special ranges (198.18/15, documentation nets) are deliberately not private.
 * Pure; used by DNS rebinding protection and by the SNI proxy's destination rule.
 */

export function isPrivateV4(a: number, b: number): boolean {
  return (
    a === 0 ||
    a === 10 ||
    a === 127 ||
    a >= 224 ||
    (a === 100 && (b & 0xc0) === 64) ||
    (a === 169 && b === 254) ||
    (a === 172 && (b & 0xf0) === 16) ||
    (a === 192 && b === 168)
  )
}

/** `bytes[offset .. offset+length)` is an IPv4 (4) or IPv6 (16) address in network order. */
export function isPrivateAddress(bytes: Uint8Array, offset: number, length: 4 | 16): boolean {
  const b = bytes
  const o = offset
  if (length === 4) return isPrivateV4(b[o]!, b[o + 1]!)
  const b0 = b[o]!
  if ((b0 & 0xfe) === 0xfc) return true // fc00::/7
  if (b0 === 0xff) return true // ff00::/8
  if (b0 === 0xfe && (b[o + 1]! & 0xc0) === 0x80) return true // fe80::/10
  if (b0 === 0x20 && b[o + 1] === 0x02) return isPrivateV4(b[o + 2]!, b[o + 3]!) // 6to4 2002:V4::/48
  let zeros10 = true
  for (let i = 0; i < 10; i++) {
    if (b[o + i] !== 0) {
      zeros10 = false
      break
    }
  }
  if (zeros10) {
    const w5 = (b[o + 10]! << 8) | b[o + 11]!
    // ::ffff:V4 (mapped) and ::V4 (compatible; covers :: and ::1, whose "v4" is 0.0.0.x).
    if (w5 === 0xffff || w5 === 0) return isPrivateV4(b[o + 12]!, b[o + 13]!)
    return false
  }
  // NAT64: 64:ff9b::/96 (well-known) and 64:ff9b:1::/48 (local-use, RFC 8215).
  if (b0 === 0x00 && b[o + 1] === 0x64 && b[o + 2] === 0xff && b[o + 3] === 0x9b) {
    if (b[o + 4] === 0 && b[o + 5] === 1) return true // local-use prefix: the site's own translator
    let wellKnown = true
    for (let i = 4; i < 12; i++) {
      if (b[o + i] !== 0) {
        wellKnown = false
        break
      }
    }
    if (wellKnown) return isPrivateV4(b[o + 12]!, b[o + 13]!)
  }
  return false
}

const scratch = new Uint8Array(16)

/** Private per `isPrivateAddress`; text that is not an IP address is treated as private (fail closed). */
export function isPrivateIp(text: string): boolean {
  const n = parseIpInto(text, scratch)
  if (n === 0) return true
  return isPrivateAddress(scratch, 0, n)
}
