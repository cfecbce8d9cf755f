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

/**
 * Parses an IPv4 dotted quad or an IPv6 address (with ::, embedded dotted quad, and a
 * %zone, which is ignored) into `out`; returns 4, 16, or 0 when the text is not an
 * address. No allocation: the DNS server runs it on every client address.
 */
export function parseIpInto(text: string, out: Uint8Array): 0 | 4 | 16 {
  if (text.indexOf(':') < 0) return parseV4(text, 0, text.length, out, 0) ? 4 : 0
  let end = text.indexOf('%')
  if (end < 0) end = text.length
  const groups = scratchGroups
  let count = 0
  let gap = -1
  let i = 0
  if (text.charCodeAt(0) === 58) {
    if (text.charCodeAt(1) !== 58) return 0
    gap = 0
    i = 2
    if (i === end) {
      out.fill(0, 0, 16)
      return 16
    }
  }
  while (i < end) {
    // A dotted quad may end the address.
    let j = i
    let hasDot = false
    while (j < end && text.charCodeAt(j) !== 58) {
      if (text.charCodeAt(j) === 46) hasDot = true
      j++
    }
    if (hasDot) {
      if (j !== end || count > 6) return 0
      if (!parseV4(text, i, end, v4tmp, 0)) return 0
      groups[count++] = (v4tmp[0]! << 8) | v4tmp[1]!
      groups[count++] = (v4tmp[2]! << 8) | v4tmp[3]!
      i = end
      break
    }
    const digits = j - i
    if (digits < 1 || digits > 4 || count >= 8) return 0
    let v = 0
    for (let k = i; k < j; k++) {
      const h = hexValue(text.charCodeAt(k))
      if (h < 0) return 0
      v = (v << 4) | h
    }
    groups[count++] = v
    if (j === end) {
      i = end
      break
    }
    // j is at ':'
    if (text.charCodeAt(j + 1) === 58) {
      if (gap >= 0) return 0
      gap = count
      i = j + 2
    } else {
      i = j + 1
      if (i === end) return 0
    }
  }
  if (gap < 0 && count !== 8) return 0
  if (gap >= 0 && count > 7) return 0
  const fill = 8 - count
  let w = 0
  for (let g = 0; g < count; g++) {
    if (g === gap) for (let z = 0; z < fill; z++) (out[w++] = 0), (out[w++] = 0)
    out[w++] = groups[g]! >> 8
    out[w++] = groups[g]! & 0xff
  }
  if (gap === count) for (let z = 0; z < fill; z++) (out[w++] = 0), (out[w++] = 0)
  return 16
}

const scratchGroups = new Uint16Array(8)
const v4tmp = new Uint8Array(4)

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}

function parseV4(text: string, start: number, end: number, out: Uint8Array, off: number): boolean {
  let part = 0
  let value = 0
  let digits = 0
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c === 46) {
      if (digits === 0 || part === 3) return false
      out[off + part++] = value
      value = 0
      digits = 0
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return false // no leading zeros (octal ambiguity)
      value = value * 10 + (c - 48)
      if (++digits > 3 || value > 255) return false
    } else return false
  }
  if (digits === 0 || part !== 3) return false
  out[off + 3] = value
  return true
}
