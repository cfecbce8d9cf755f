/**
 * Judges the bytes of a ClientHello's host_name. Pure: bytes in, a verdict out.
 * Only the label alphabet of docs/design.md reaches the policy; anything else is
 * reported with a reason so the proxy can block it and say why.
 */

import { labelText } from '../dns/name-text.js'

export type NameVerdict = 'ok' | 'ip_literal' | 'bad_name'

const MAX_NAME = 253
const MAX_LABEL = 63

/**
 * `ok` when `buf[start, end)` is a host name: labels of 1–63 bytes of `a-z A-Z 0-9 - _`,
 * one optional trailing dot, at most 253 bytes without it. `ip_literal` for a name that
 * a URL parser or inet_aton would take as an address: anything with `:` made only of
 * hex digits, dots, colons and brackets (IPv6), or a last label that is all digits or
 * `0x` + hex (IPv4 in dotted, short `127.1`, decimal or hex form; no TLD is numeric).
 */
export function judgeServerName(buf: Uint8Array, start: number, end: number): NameVerdict {
  if (end > start && buf[end - 1] === 0x2e) end-- // one trailing dot is allowed
  const length = end - start
  if (length === 0 || length > MAX_NAME) return 'bad_name'
  if (looksLikeIpv6(buf, start, end)) return 'ip_literal'
  let labelStart = start
  for (let i = start; i < end; i++) {
    const c = buf[i]!
    if (c === 0x2e) {
      const labelLength = i - labelStart
      if (labelLength === 0 || labelLength > MAX_LABEL) return 'bad_name'
      labelStart = i + 1
    } else if (!isNameByte(c)) {
      return 'bad_name'
    }
  }
  const lastLength = end - labelStart
  if (lastLength === 0 || lastLength > MAX_LABEL) return 'bad_name'
  return isNumericLabel(buf, labelStart, end) ? 'ip_literal' : 'ok'
}

/**
 * The name as the policy wants it: lowercase ASCII without the trailing dot. Only
 * called after `judgeServerName` said `ok` (or `ip_literal`, whose bytes are ASCII too).
 */
export function serverNameString(buf: Uint8Array, start: number, end: number): string {
  if (end > start && buf[end - 1] === 0x2e) end--
  let upper = false
  for (let i = start; i < end; i++) {
    const c = buf[i]!
    if (c >= 0x41 && c <= 0x5a) {
      upper = true
      break
    }
  }
  const text = Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1')
  return upper ? text.toLowerCase() : text
}

/**
 * A printable rendering of hostile name bytes for a log line or a metric label, with
 * the DNS side's one rule (src/dns/name-text.ts): lowercase, `.` as the separator it is
 * in a host_name, every byte outside the label alphabet as `\DDD`; at most 253 source
 * bytes. Runs only on the bad_name path.
 */
export function describeBadName(buf: Uint8Array, start: number, end: number): string {
  let out = ''
  const stop = Math.min(end, start + MAX_NAME)
  let labelStart = start
  for (let i = start; i <= stop; i++) {
    if (i === stop || buf[i] === 0x2e) {
      out += (labelStart > start ? '.' : '') + labelText(buf, labelStart, i)
      labelStart = i + 1
    }
  }
  return stop < end ? out + '…' : out
}

function isNameByte(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === 0x5f // _
  )
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46)
}

function looksLikeIpv6(buf: Uint8Array, start: number, end: number): boolean {
  let colon = false
  for (let i = start; i < end; i++) {
    const c = buf[i]!
    if (c === 0x3a) colon = true
    else if (!(isHex(c) || c === 0x2e || c === 0x5b || c === 0x5d)) return false
  }
  return colon
}

function isNumericLabel(buf: Uint8Array, start: number, end: number): boolean {
  if (end - start > 2 && buf[start] === 0x30 && (buf[start + 1] === 0x78 || buf[start + 1] === 0x58)) {
    for (let i = start + 2; i < end; i++) if (!isHex(buf[i]!)) return false
    return true
  }
  for (let i = start; i < end; i++) {
    const c = buf[i]!
    if (c < 0x30 || c > 0x39) return false
  }
  return true
}
