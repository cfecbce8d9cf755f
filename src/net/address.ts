/**
 * IP address text ⇄ bytes, the one parser and the one formatter of egressd.
 *
 * The parser accepts exactly what node:net `isIP` accepts (a property test holds it to
 * that), so a config value, a socket's peer address and a DNS answer are read alike. It
 * writes into a caller's buffer and allocates nothing: the DNS server runs it on every
 * client address. Bytes are in network order: 4 for IPv4, 16 for IPv6.
 */

/**
 * Parses an IPv4 dotted quad or an IPv6 address (with ::, an embedded dotted quad, and a
 * %zone, which is checked as node:net checks it and then ignored) into `out`; returns 4,
 * 16, or 0 when the text is not an address.
 */
export function parseIpInto(text: string, out: Uint8Array): 0 | 4 | 16 {
  if (text.indexOf(':') < 0) return parseV4(text, 0, text.length, out, 0) ? 4 : 0
  let end = text.indexOf('%')
  if (end < 0) end = text.length
  else if (!validZone(text, end + 1)) return 0
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

const scratch = new Uint8Array(16)

/** The address's bytes (a new 4- or 16-byte array), or null when `text` is not an address. */
export function parseIp(text: string): Uint8Array | null {
  const n = parseIpInto(text, scratch)
  return n === 0 ? null : scratch.slice(0, n)
}

/** 4, 6, or 0 when `text` is not an address: node:net `isIP`, from the one parser. */
export function ipFamily(text: string): 0 | 4 | 6 {
  const n = parseIpInto(text, scratch)
  return n === 4 ? 4 : n === 16 ? 6 : 0
}

/** Whether `bytes[off .. off+16)` is IPv4-mapped, ::ffff:a.b.c.d (what a dual-stack socket reports for an IPv4 peer). */
export function isV4Mapped(bytes: Uint8Array, off = 0): boolean {
  for (let i = 0; i < 10; i++) if (bytes[off + i] !== 0) return false
  return bytes[off + 10] === 0xff && bytes[off + 11] === 0xff
}

/**
 * A peer's address as the device means it, or null when `text` is not an address: an
 * IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4 peer) as its IPv4
 * text, any other address in canonical text (RFC 5952 for IPv6), a zone id dropped.
 */
export function peerAddress(text: string): { family: 4 | 6; text: string } | null {
  const n = parseIpInto(text, scratch)
  if (n === 0) return null
  // The parser takes only node:net's IPv4 form (no leading zeros, four parts): already canonical.
  if (n === 4) return { family: 4, text }
  if (isV4Mapped(scratch)) return { family: 4, text: formatIp(scratch, 12, 4) }
  return { family: 6, text: formatIp(scratch, 0, 16) }
}

/** Whether `text` is a loopback address: 127.0.0.0/8, ::1, or 127.0.0.0/8 mapped into IPv6. */
export function isLoopbackIp(text: string): boolean {
  const n = parseIpInto(text, scratch)
  if (n === 4) return scratch[0] === 127
  if (n === 0) return false
  if (isV4Mapped(scratch)) return scratch[12] === 127
  for (let i = 0; i < 15; i++) if (scratch[i] !== 0) return false
  return scratch[15] === 1
}

/** `bytes[off .. off+4)` as an unsigned 32-bit number. */
export function v4ToUint32(bytes: Uint8Array, off = 0): number {
  return ((bytes[off]! << 24) | (bytes[off + 1]! << 16) | (bytes[off + 2]! << 8) | bytes[off + 3]!) >>> 0
}

/** Text form of a 4- or 16-byte address; IPv6 per RFC 5952 (lowercase, longest zero run of ≥ 2 groups as ::, the first of equal runs). */
export function formatIp(buf: Uint8Array, off: number, length: 4 | 16): string {
  if (length === 4) return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`
  const groups: number[] = []
  for (let i = 0; i < 8; i++) groups.push((buf[off + 2 * i]! << 8) | buf[off + 2 * i + 1]!)
  let bestStart = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = (a: number, b: number) => groups.slice(a, b).map((g) => g.toString(16)).join(':')
  if (bestStart < 0) return hex(0, 8)
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`
}

const scratchGroups = new Uint16Array(8)
const v4tmp = new Uint8Array(4)

/** node:net's zone rule: one or more of [0-9A-Za-z.:-]. */
function validZone(text: string, start: number): boolean {
  if (start >= text.length) return false
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i)
    const ok = (c >= 48 && c <= 58) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46
    if (!ok) return false
  }
  return true
}

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
