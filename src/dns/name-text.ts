/**
 * One escaping rule for every name egressd prints: DNS query names, CNAME targets and
 * SNI host names, in logs, metric labels and what `egressd suggest` reads back.
 *
 * Bytes of the label alphabet (a-z 0-9 - _, A-Z folded to lowercase) stand as they are;
 * every other byte, the `.` inside a DNS label, NUL, newline, `\`, space or `*` among
 * them, is written `\DDD` with three decimal digits, as zone files (RFC 1035 §5.1) and
 * dig print it. So a blocked one-label name `x.allowed.test` reads `x\046allowed.test`,
 * never as the allowed three-label name, and `suggest` (labels of the alphabet only)
 * never proposes it. Pure.
 */

/** 1 for a byte that needs no escape (after case folding), 0 otherwise. */
const PLAIN = new Uint8Array(256)
for (let c = 0x61; c <= 0x7a; c++) PLAIN[c] = 1
for (let c = 0x41; c <= 0x5a; c++) PLAIN[c] = 1
for (let c = 0x30; c <= 0x39; c++) PLAIN[c] = 1
PLAIN[0x2d] = 1
PLAIN[0x5f] = 1

export function isPlainNameByte(c: number): boolean {
  return PLAIN[c] === 1
}

/** `\DDD` for one byte. */
export function escapedByte(c: number): string {
  return c < 10 ? '\\00' + c : c < 100 ? '\\0' + c : '\\' + c
}

/** The text of label bytes [start, end): lowercase, escaped per the rule above. */
export function labelText(buf: Uint8Array, start: number, end: number): string {
  let out = ''
  for (let i = start; i < end; i++) {
    const c = buf[i]!
    out += PLAIN[c] === 1 ? String.fromCharCode(c >= 0x41 && c <= 0x5a ? c | 0x20 : c) : escapedByte(c)
  }
  return out
}

/** The text of an uncompressed wire name (labels escaped, no trailing dot; "." for the root). */
export function wireNameText(name: Uint8Array): string {
  let out = ''
  for (let off = 0; off < name.length && name[off] !== 0; off += name[off]! + 1) {
    out += (out.length > 0 ? '.' : '') + labelText(name, off + 1, off + 1 + name[off]!)
  }
  return out.length === 0 ? '.' : out
}
