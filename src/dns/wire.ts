/**
 * DNS wire format on raw bytes: the query parser, reply builders, and the answer
 * scanner/rewriter. Pure: no sockets, timers, logging or metrics.
 *
 * Hand-written rather than dns2 or dns-packet (docs/design.md, dependencies): dns2's codec reads
 * bit by bit (25 µs per query, ~1.9 s for a hostile 12-byte header), drops unknown
 * EDNS options and re-encodes answers lossily; dns-packet throws and allocates a full
 * object tree. The daemon only needs the header, the one question and an RR walk, and
 * it relays upstream bytes unchanged, so nothing here decodes what it does not need.
 *
 * Every loop is bounded by the buffer length (each step consumes at least one byte) or
 * by a hop counter (compression pointers), so hostile input costs O(length).
 */

import { formatIp } from '../net/address.js'
import { isPlainNameByte, labelText } from './name-text.js'

export const HEADER_LEN = 12

export const TYPE_A = 1
export const TYPE_NS = 2
export const TYPE_CNAME = 5
export const TYPE_SOA = 6
export const TYPE_HINFO = 13
export const TYPE_TXT = 16
export const TYPE_AAAA = 28
export const TYPE_OPT = 41
export const TYPE_PTR = 12
export const TYPE_MX = 15
export const TYPE_SRV = 33
export const TYPE_DNAME = 39
export const TYPE_SVCB = 64
export const TYPE_HTTPS = 65
export const TYPE_IXFR = 251
export const TYPE_AXFR = 252
export const TYPE_ANY = 255
export const CLASS_IN = 1

export const RCODE_NOERROR = 0
export const RCODE_FORMERR = 1
export const RCODE_SERVFAIL = 2
export const RCODE_NXDOMAIN = 3
export const RCODE_NOTIMP = 4
export const RCODE_REFUSED = 5
/** RFC 6891: extended RCODE 16, carried as 1 in the OPT's upper RCODE byte with header RCODE 0. */
export const RCODE_BADVERS = 16

/** RFC 8914 Extended DNS Error INFO-CODEs we emit. */
export const EDE_BLOCKED = 15
export const EDE_FILTERED = 17
export const EDE_PROHIBITED = 18
export const EDE_INVALID_DATA = 24
export const EDE_NO_REACHABLE_AUTHORITY = 22
const EDE_OPTION = 15

/** Our advertised EDNS UDP payload size (DNS flag day 2020 value), to clients and upstream. */
export const OUR_UDP_SIZE = 1232
/** OPT RR without options: root name (1) + type (2) + class (2) + ttl (4) + rdlen (2). */
export const OPT_LEN = 11
const MAX_POINTER_HOPS = 16

export const PARSE_OK = 0
/** Not answered: shorter than a header, or a response (QR set; answering would loop). */
export const PARSE_DROP = 1
export const PARSE_FORMERR = 2
export const PARSE_NOTIMP = 3

/**
 * What the server needs from a query; one instance per socket, reused for every
 * datagram (the parse writes fields, never allocates).
 */
export class QueryInfo {
  id = 0
  opcode = 0
  /** Offset just past QTYPE/QCLASS; the question is bytes [12, questionEnd). */
  questionEnd = 0
  /** Offset of QTYPE (just past the QNAME's root label). */
  qnameEnd = 0
  qtype = 0
  qclass = 0
  hasOpt = false
  /**
   * The most a UDP answer may be: the client's advertised EDNS payload size, at least
   * 512, at most `maxUdpSize`.
   */
  udpSize = 512
  /**
   * `dns.max_udp_payload`: the size our OPT advertises to clients and the cap on what
   * we honour of theirs, so a 50-byte query cannot draw a 60 KB datagram (amplification).
   * Set by the handler on reload; parseQuery never writes it.
   */
  maxUdpSize = OUR_UDP_SIZE
  dnssecOk = false
  /** The OPT's EDNS VERSION (0 without an OPT); anything else is answered BADVERS. */
  ednsVersion = 0
  checkingDisabled = false
  authenticData = false
}

/**
 * Parses a query's header, its one question and its additional section (for OPT).
 * Returns PARSE_*; `q` is valid only after PARSE_OK (id and opcode after FORMERR/NOTIMP).
 */
export function parseQuery(buf: Uint8Array, len: number, q: QueryInfo): number {
  if (len < HEADER_LEN) return PARSE_DROP
  const b2 = buf[2]!
  if ((b2 & 0x80) !== 0) return PARSE_DROP
  q.id = (buf[0]! << 8) | buf[1]!
  q.opcode = (b2 >> 3) & 0x0f
  if (q.opcode !== 0) return PARSE_NOTIMP
  const qd = (buf[4]! << 8) | buf[5]!
  const an = (buf[6]! << 8) | buf[7]!
  const ns = (buf[8]! << 8) | buf[9]!
  const ar = (buf[10]! << 8) | buf[11]!
  if (qd !== 1 || an !== 0 || ns !== 0) return PARSE_FORMERR
  // QNAME: plain labels only; a pointer in the first name of a message can only
  // point forward or at itself, so it is malformed, never compressed.
  let off = HEADER_LEN
  for (;;) {
    if (off >= len) return PARSE_FORMERR
    const l = buf[off]!
    if (l === 0) break
    if (l > 63) return PARSE_FORMERR
    off += l + 1
    if (off - HEADER_LEN > 254) return PARSE_FORMERR // name incl. root label > 255
  }
  off++
  if (off + 4 > len) return PARSE_FORMERR
  q.qnameEnd = off
  q.qtype = (buf[off]! << 8) | buf[off + 1]!
  q.qclass = (buf[off + 2]! << 8) | buf[off + 3]!
  off += 4
  q.questionEnd = off
  q.hasOpt = false
  q.udpSize = 512
  q.dnssecOk = false
  q.ednsVersion = 0
  q.checkingDisabled = (buf[3]! & 0x10) !== 0
  q.authenticData = (buf[3]! & 0x20) !== 0
  for (let i = 0; i < ar; i++) {
    const rr = off
    off = skipName(buf, off, len)
    if (off < 0 || off + 10 > len) return PARSE_FORMERR
    const type = (buf[off]! << 8) | buf[off + 1]!
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!
    if (off + 10 + rdlen > len) return PARSE_FORMERR
    if (type === TYPE_OPT) {
      if (q.hasOpt || off !== rr + 1) return PARSE_FORMERR // two OPTs, or a non-root owner
      q.hasOpt = true
      const size = (buf[off + 2]! << 8) | buf[off + 3]!
      q.udpSize = size < 512 ? 512 : size > q.maxUdpSize ? q.maxUdpSize : size
      q.dnssecOk = (buf[off + 6]! & 0x80) !== 0
      q.ednsVersion = buf[off + 5]!
    }
    off += 10 + rdlen
  }
  return PARSE_OK
}

/** Offset just past the (possibly compressed) name at `off`, or -1. Does not follow pointers. */
export function skipName(buf: Uint8Array, off: number, end: number): number {
  for (;;) {
    if (off >= end) return -1
    const l = buf[off]!
    if (l === 0) return off + 1
    if ((l & 0xc0) === 0xc0) return off + 2 <= end ? off + 2 : -1
    if (l > 63) return -1
    off += l + 1
  }
}

/**
 * Offset just past the name at `off` (its in-place part must end by `limit`), or -1
 * when the name is malformed anywhere along its compression pointers: every pointer
 * must point strictly before itself (RFC 1035 §4.1.4: to a prior occurrence), so a loop
 * cannot exist and the walk ends in at most `len` steps; labels ≤ 63, the whole name ≤ 255
 * bytes, every byte inside the message of `len` bytes. For upstream answers (miss path):
 * a name that the client would have to decode through a loop is never relayed.
 */
export function checkName(buf: Uint8Array, off: number, limit: number, len: number): number {
  let end = -1
  let total = 0
  let bound = limit
  for (;;) {
    if (off >= bound) return -1
    const l = buf[off]!
    if (l === 0) return end < 0 ? off + 1 : end
    if ((l & 0xc0) === 0xc0) {
      if (off + 2 > bound) return -1
      const target = ((l & 0x3f) << 8) | buf[off + 1]!
      if (target >= off) return -1
      if (end < 0) end = off + 2
      off = target
      bound = len
      continue
    }
    if (l > 63) return -1
    total += l + 1
    if (total > 254) return -1
    off += l + 1
  }
}

/**
 * The name at `off` as lowercase dotted text (no trailing dot; "" for the root), label
 * bytes outside the alphabet escaped `\DDD` (name-text.ts), following compression
 * pointers; null when malformed. Off the hot path only.
 */
export function readName(buf: Uint8Array, off: number, end: number): string | null {
  let out = ''
  let hops = 0
  let total = 0
  for (;;) {
    if (off >= end) return null
    const l = buf[off]!
    if (l === 0) return out
    if ((l & 0xc0) === 0xc0) {
      if (off + 1 >= end || ++hops > MAX_POINTER_HOPS) return null
      off = ((l & 0x3f) << 8) | buf[off + 1]!
      continue
    }
    if (l > 63 || off + 1 + l > end) return null
    total += l + 1
    if (total > 255) return null
    const label = labelText(buf, off + 1, off + 1 + l)
    out = out.length === 0 ? label : out + '.' + label
    off += l + 1
  }
}

/**
 * The QNAME at offset 12 as lowercase dotted text, written through `scratch` (≥ 256
 * bytes) so it costs one string. A byte outside the label alphabet (a `.` inside a
 * label, NUL, newline …) sends it down the escaping path (`\DDD`, name-text.ts): the
 * text goes to logs, metric labels and `suggest`, where `x.allowed.test` as one label
 * must never read as the allowed name.
 */
export function qnameText(buf: Uint8Array, qnameEnd: number, scratch: Buffer): string {
  let n = 0
  let off = HEADER_LEN
  const last = qnameEnd - 1
  while (off < last) {
    const l = buf[off]!
    if (n > 0) scratch[n++] = 0x2e
    for (let i = off + 1; i <= off + l; i++) {
      const c = buf[i]!
      if (!isPlainNameByte(c)) return escapedQname(buf, last)
      scratch[n++] = c >= 0x41 && c <= 0x5a ? c | 0x20 : c
    }
    off += l + 1
  }
  return n === 0 ? '.' : scratch.toString('latin1', 0, n)
}

function escapedQname(buf: Uint8Array, last: number): string {
  let out = ''
  for (let off = HEADER_LEN; off < last; ) {
    const l = buf[off]!
    out += (out.length > 0 ? '.' : '') + labelText(buf, off + 1, off + 1 + l)
    off += l + 1
  }
  return out
}

/** Encodes a dotted name (one trailing dot ignored) as wire labels; null when it is not a valid name. */
export function encodeName(name: string): Buffer | null {
  if (name.endsWith('.')) name = name.slice(0, -1)
  if (name.length === 0) return Buffer.from([0])
  const labels = name.split('.')
  const out = Buffer.allocUnsafe(name.length + 2)
  let off = 0
  for (const label of labels) {
    const bytes = Buffer.from(label, 'latin1')
    if (bytes.length === 0 || bytes.length > 63) return null
    out[off++] = bytes.length
    off += bytes.copy(out, off)
  }
  out[off++] = 0
  return off > 255 ? null : out.subarray(0, off)
}

/** A standard query for `name`/`type` with an OPT (DO clear), as the resolver sends for `lookup`. */
export function buildQuery(name: Buffer, type: number, id: number): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LEN + name.length + 4 + OPT_LEN)
  out.writeUInt16BE(id, 0)
  out[2] = 0x01 // RD
  out[3] = 0
  out.writeUInt16BE(1, 4)
  out.writeUInt32BE(0, 6)
  out.writeUInt16BE(1, 10)
  name.copy(out, HEADER_LEN)
  let off = HEADER_LEN + name.length
  out.writeUInt16BE(type, off)
  out.writeUInt16BE(CLASS_IN, off + 2)
  writeOpt(out, off + 4, false, 0, null)
  return out
}

/**
 * The query we send upstream for a client query: its question bytes as sent (case
 * kept), RD set, AD/CD copied, no client EDNS options, our own OPT with the client's DO.
 */
export function buildUpstreamQuery(q: Uint8Array, info: QueryInfo, id: number): Buffer {
  const out = Buffer.allocUnsafe(info.questionEnd + OPT_LEN)
  out[0] = id >> 8
  out[1] = id & 0xff
  out[2] = 0x01
  out[3] = (info.authenticData ? 0x20 : 0) | (info.checkingDisabled ? 0x10 : 0)
  out[4] = 0
  out[5] = 1
  out.fill(0, 6, 10)
  out[10] = 0
  out[11] = 1
  copyBytes(q, HEADER_LEN, info.questionEnd, out, HEADER_LEN)
  writeOpt(out, info.questionEnd, info.dnssecOk, 0, null)
  return out
}

/** RFC 8467 §4.1: queries over an encrypted transport padded to a multiple of 128 octets (unbound's pad-queries-block-size). */
export const QUERY_PADDING_BLOCK = 128

/**
 * `query` (as buildUpstreamQuery makes it: ending in our OPT with no options) with an
 * EDNS Padding option (RFC 7830, code 12) that brings its length to a multiple of
 * QUERY_PADDING_BLOCK, so the length of an encrypted query says little about the name
 * asked. A query of any other shape is returned as it is.
 */
export function padQuery(query: Buffer): Buffer {
  const len = query.length
  const opt = len - OPT_LEN
  if (opt < HEADER_LEN || query[opt] !== 0 || query.readUInt16BE(opt + 1) !== TYPE_OPT || query.readUInt16BE(len - 2) !== 0) return query
  const pad = (QUERY_PADDING_BLOCK - ((len + 4) % QUERY_PADDING_BLOCK)) % QUERY_PADDING_BLOCK
  const out = Buffer.alloc(len + 4 + pad)
  query.copy(out, 0, 0, len)
  out.writeUInt16BE(4 + pad, len - 2)
  out.writeUInt16BE(12, len)
  out.writeUInt16BE(pad, len + 2)
  return out
}

/** Bytes an OPT takes with an optional EDE option carrying `text`. */
export function optLength(ede: number, text: Uint8Array | null): number {
  return OPT_LEN + (ede > 0 ? 6 + (text === null ? 0 : text.length) : 0)
}

/** Writes our OPT RR at `off` (advertising `udpSize`, version 0, DO as given, EDE when ede > 0); returns the end offset. */
export function writeOpt(
  out: Uint8Array,
  off: number,
  dnssecOk: boolean,
  ede: number,
  text: Uint8Array | null,
  udpSize: number = OUR_UDP_SIZE,
): number {
  const textLen = text === null ? 0 : text.length
  const rdlen = ede > 0 ? 6 + textLen : 0
  out[off] = 0
  out[off + 1] = 0
  out[off + 2] = TYPE_OPT
  out[off + 3] = udpSize >> 8
  out[off + 4] = udpSize & 0xff
  out[off + 5] = 0 // extended RCODE
  out[off + 6] = 0 // version
  out[off + 7] = dnssecOk ? 0x80 : 0
  out[off + 8] = 0
  out[off + 9] = rdlen >> 8
  out[off + 10] = rdlen & 0xff
  off += OPT_LEN
  if (ede > 0) {
    out[off] = 0
    out[off + 1] = EDE_OPTION
    out[off + 2] = (2 + textLen) >> 8
    out[off + 3] = (2 + textLen) & 0xff
    out[off + 4] = ede >> 8
    out[off + 5] = ede & 0xff
    off += 6
    if (text !== null) {
      out.set(text, off)
      off += textLen
    }
  }
  return off
}

/** ANCOUNT, NSCOUNT and ARCOUNT of a reply whose question was copied (QDCOUNT stays 1). */
function setCounts(out: Buffer, answers: number, hasOpt: boolean): void {
  out[6] = 0
  out[7] = answers
  out[8] = 0
  out[9] = 0
  out[10] = 0
  out[11] = hasOpt ? 1 : 0
}

/**
 * A reply made from the query's own bytes: header and question copied, QR/RA set,
 * RD/CD echoed, no records, and an OPT (with an EDE when `ede` > 0) only when the
 * query had one. Used for NXDOMAIN, NODATA, REFUSED and SERVFAIL.
 */
export function buildReply(q: Uint8Array, info: QueryInfo, rcode: number, ede: number, text: Uint8Array | null): Buffer {
  const end = info.questionEnd
  const size = info.hasOpt ? end + optLength(ede, text) : end
  const out = Buffer.allocUnsafe(size)
  copyBytes(q, 0, end, out, 0)
  out[2] = 0x80 | (q[2]! & 0x01)
  out[3] = 0x80 | (q[3]! & 0x10) | rcode
  setCounts(out, 0, info.hasOpt)
  if (info.hasOpt) writeOpt(out, end, info.dnssecOk, ede, text, info.maxUdpSize)
  return out
}

/** FORMERR / NOTIMP: the header only (ID, opcode and RD echoed), every count zero. */
export function buildHeaderReply(q: Uint8Array, rcode: number): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LEN)
  out[0] = q[0]!
  out[1] = q[1]!
  out[2] = 0x80 | (q[2]! & 0x79)
  out[3] = 0x80 | rcode
  out.fill(0, 4, HEADER_LEN)
  return out
}

/**
 * BADVERS (RFC 6891 §6.1.3) to a query with EDNS version > 0: header and question
 * copied, header RCODE 0, and our OPT (version 0, the version we do speak) carrying the
 * upper RCODE bits (16 >> 4 = 1).
 */
export function buildBadvers(q: Uint8Array, info: QueryInfo): Buffer {
  const out = buildReply(q, info, RCODE_BADVERS & 0x0f, 0, null)
  out[info.questionEnd + 5] = RCODE_BADVERS >> 4
  return out
}

const HINFO_RDATA = Buffer.from('\x07RFC8482\x00', 'latin1')

/**
 * RFC 8482 answer to ANY: one synthesized HINFO "RFC8482" "" for the queried name,
 * so an ANY query never earns a larger answer than a plain one (no amplification).
 */
export function buildAnyReply(q: Uint8Array, info: QueryInfo): Buffer {
  const end = info.questionEnd
  const rrLen = 2 + 10 + HINFO_RDATA.length
  const out = Buffer.allocUnsafe(end + rrLen + (info.hasOpt ? OPT_LEN : 0))
  copyBytes(q, 0, end, out, 0)
  out[2] = 0x80 | (q[2]! & 0x01)
  out[3] = 0x80 | (q[3]! & 0x10)
  setCounts(out, 1, info.hasOpt)
  let off = end
  out[off++] = 0xc0
  out[off++] = HEADER_LEN
  out.writeUInt16BE(TYPE_HINFO, off)
  out.writeUInt16BE(info.qclass, off + 2)
  out.writeUInt32BE(3600, off + 4)
  out.writeUInt16BE(HINFO_RDATA.length, off + 8)
  HINFO_RDATA.copy(out, off + 10)
  off += 10 + HINFO_RDATA.length
  if (info.hasOpt) writeOpt(out, off, info.dnssecOk, 0, null, info.maxUdpSize)
  return out
}

/**
 * True when `ans` answers `sent`: a response, same ID and opcode, exactly one question
 * equal to ours (name case-insensitively, type and class exactly).
 */
export function answerMatches(ans: Uint8Array, len: number, sent: Uint8Array, questionEnd: number): boolean {
  if (len < questionEnd) return false
  if (ans[0] !== sent[0] || ans[1] !== sent[1]) return false
  if ((ans[2]! & 0x80) === 0 || (ans[2]! & 0x78) !== (sent[2]! & 0x78)) return false
  if (ans[4] !== 0 || ans[5] !== 1) return false
  let off = HEADER_LEN
  // Walk label by label so a length byte is never compared with case folding.
  while (off < questionEnd) {
    const l = sent[off]!
    if (ans[off] !== l) return false
    if (l === 0) break
    for (let i = off + 1; i <= off + l; i++) {
      let a = ans[i]!
      let b = sent[i]!
      if (a >= 0x41 && a <= 0x5a) a |= 0x20
      if (b >= 0x41 && b <= 0x5a) b |= 0x20
      if (a !== b) return false
    }
    off += l + 1
  }
  off++
  for (let i = off; i < questionEnd; i++) if (ans[i] !== sent[i]) return false
  return true
}

/** What `scanAnswer` learns from one upstream answer; allocated per upstream answer (miss path). */
export interface AnswerScan {
  rcode: number
  questionEnd: number
  anCount: number
  nsCount: number
  /** Smallest TTL over answer and authority RRs (OPT excluded); -1 when there are none. */
  minTtl: number
  /** RFC 2308: min(SOA TTL, SOA MINIMUM) of an authority SOA; -1 without one. */
  negativeTtl: number
  /** The upstream OPT RR's [start, end), -1 when absent. */
  optStart: number
  optEnd: number
  /** Additional RRs before the OPT (all of them when there is no OPT). */
  arKept: number
  /** End of the last RR kept (the OPT and anything after it are cut). */
  keptEnd: number
  /** Offsets of the TTL fields of every kept RR. */
  ttlOffsets: number[]
  /** Offsets of A (4-byte) and AAAA (16-byte) rdata in the answer section. */
  addressOffsets: number[]
  /**
   * Every other address the answer carries, as (offset, length 4 | 16) pairs: A/AAAA in
   * the authority and additional sections, and SVCB/HTTPS ipv4hint/ipv6hint values in
   * any section. A client may connect to any of them, so rebinding protection counts them.
   */
  otherAddresses: number[]
  /** The answer section holds a CNAME or DNAME (its chain is then checked against the policy). */
  hasAlias: boolean
}

/**
 * Walks every RR of an upstream answer (already checked by `answerMatches`).
 * Returns null when the message is malformed (a count runs past the data, a bad
 * name, OPT outside the additional section or twice).
 */
export function scanAnswer(buf: Uint8Array, len: number): AnswerScan | null {
  const an = (buf[6]! << 8) | buf[7]!
  const ns = (buf[8]! << 8) | buf[9]!
  const ar = (buf[10]! << 8) | buf[11]!
  let off = skipName(buf, HEADER_LEN, len)
  if (off < 0 || off + 4 > len) return null
  off += 4
  const scan: AnswerScan = {
    rcode: buf[3]! & 0x0f,
    questionEnd: off,
    anCount: an,
    nsCount: ns,
    minTtl: -1,
    negativeTtl: -1,
    optStart: -1,
    optEnd: -1,
    arKept: ar,
    keptEnd: off,
    ttlOffsets: [],
    addressOffsets: [],
    otherAddresses: [],
    hasAlias: false,
  }
  const total = an + ns + ar
  for (let i = 0; i < total; i++) {
    const rr = off
    off = checkName(buf, off, len, len)
    if (off < 0 || off + 10 > len) return null
    const type = (buf[off]! << 8) | buf[off + 1]!
    const ttlOff = off + 4
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!
    const rdata = off + 10
    off = rdata + rdlen
    if (off > len) return null
    if (!rdataNamesValid(buf, type, rdata, off, len)) return null
    if (type === TYPE_OPT) {
      if (i < an + ns || scan.optStart >= 0) return null
      scan.optStart = rr
      scan.optEnd = off
      scan.arKept = i - an - ns
      continue
    }
    if (scan.optStart >= 0) continue // after the OPT: dropped, see stripOpt
    scan.keptEnd = off
    scan.ttlOffsets.push(ttlOff)
    let ttl = ((buf[ttlOff]! << 24) | (buf[ttlOff + 1]! << 16) | (buf[ttlOff + 2]! << 8) | buf[ttlOff + 3]!) >>> 0
    if (ttl > 0x7fffffff) ttl = 0 // RFC 2181 §8
    if (i < an + ns && (scan.minTtl < 0 || ttl < scan.minTtl)) scan.minTtl = ttl
    if (i < an && (type === TYPE_CNAME || type === TYPE_DNAME)) scan.hasAlias = true
    if ((type === TYPE_A && rdlen === 4) || (type === TYPE_AAAA && rdlen === 16)) {
      if (i < an) scan.addressOffsets.push(rdata)
      else scan.otherAddresses.push(rdata, rdlen)
    } else if ((type === TYPE_SVCB || type === TYPE_HTTPS) && !svcHints(buf, rdata, off, len, scan.otherAddresses)) {
      return null
    }
    if (i >= an && i < an + ns && type === TYPE_SOA) {
      let p = skipName(buf, rdata, off)
      if (p >= 0) p = skipName(buf, p, off)
      if (p >= 0 && p + 20 <= off) {
        const minimum = ((buf[p + 16]! << 24) | (buf[p + 17]! << 16) | (buf[p + 18]! << 8) | buf[p + 19]!) >>> 0
        const neg = Math.min(ttl, minimum > 0x7fffffff ? 0 : minimum)
        if (scan.negativeTtl < 0 || neg < scan.negativeTtl) scan.negativeTtl = neg
      }
    }
  }
  return scan
}

/**
 * The domain names inside the RDATA of the types that carry them compressed or that a
 * client follows (CNAME, DNAME, NS, PTR, MX, SRV, SOA, SVCB/HTTPS target): each must be
 * well formed per `checkName` and end exactly where the RDATA says.
 */
function rdataNamesValid(buf: Uint8Array, type: number, rdata: number, end: number, len: number): boolean {
  switch (type) {
    case TYPE_CNAME:
    case TYPE_DNAME:
    case TYPE_NS:
    case TYPE_PTR:
      return checkName(buf, rdata, end, len) === end
    case TYPE_MX:
      return checkName(buf, rdata + 2, end, len) === end
    case TYPE_SRV:
      return checkName(buf, rdata + 6, end, len) === end
    case TYPE_SOA: {
      const rname = checkName(buf, rdata, end, len)
      const serial = rname < 0 ? -1 : checkName(buf, rname, end, len)
      return serial >= 0 && serial + 20 === end
    }
    case TYPE_SVCB:
    case TYPE_HTTPS:
      return checkName(buf, rdata + 2, end, len) >= 0
    default:
      return true
  }
}

const SVC_IPV4HINT = 4
const SVC_IPV6HINT = 6

/**
 * Appends the ipv4hint/ipv6hint addresses of SVCB/HTTPS RDATA [rdata, end) to `out` as
 * (offset, length) pairs (RFC 9460 §2.2: priority, uncompressed target, then SvcParams
 * of key, length, value). False when the params run past the RDATA or a hint's length
 * is not a whole number of addresses: a malformed answer.
 */
function svcHints(buf: Uint8Array, rdata: number, end: number, len: number, out: number[]): boolean {
  let p = checkName(buf, rdata + 2, end, len)
  if (p < 0) return false
  while (p < end) {
    if (p + 4 > end) return false
    const key = (buf[p]! << 8) | buf[p + 1]!
    const vlen = (buf[p + 2]! << 8) | buf[p + 3]!
    p += 4
    if (p + vlen > end) return false
    const size = key === SVC_IPV4HINT ? 4 : key === SVC_IPV6HINT ? 16 : 0
    if (size > 0) {
      if (vlen === 0 || vlen % size !== 0) return false
      for (let a = p; a < p + vlen; a += size) out.push(a, size)
    }
    p += vlen
  }
  return true
}

/**
 * A copy of the answer without the upstream OPT (and its COOKIE, padding, …).
 * The OPT is nearly always the last RR: then this is a cut plus ARCOUNT-1. When RRs
 * follow it we cut them too: additional data is optional (RFC 2181 §9), and moving
 * them would break compression pointers that point past the OPT.
 */
export function stripOpt(buf: Uint8Array, scan: AnswerScan): Buffer {
  const out = Buffer.allocUnsafe(scan.keptEnd)
  out.set(buf.subarray(0, scan.keptEnd), 0)
  out[10] = scan.arKept >> 8
  out[11] = scan.arKept & 0xff
  return out
}

/**
 * The client's copy of a stored answer: ID and question bytes from the client's query
 * (so 0x20-randomized case comes back as sent), every TTL aged by `elapsed` seconds,
 * an OPT when the query had one, or a TC answer (header + question [+ OPT]) when it
 * does not fit `maxSize`.
 */
export function renderAnswer(
  wire: Uint8Array,
  ttlOffsets: Uint16Array,
  ttls: Uint32Array,
  q: Uint8Array,
  info: QueryInfo,
  elapsed: number,
  maxSize: number,
): Buffer {
  const opt = info.hasOpt ? OPT_LEN : 0
  const size = wire.length + opt
  if (size > maxSize) return buildTruncated(wire, q, info)
  const out = Buffer.allocUnsafe(size)
  out.set(wire, 0)
  out[0] = q[0]!
  out[1] = q[1]!
  copyBytes(q, HEADER_LEN, info.questionEnd, out, HEADER_LEN)
  for (let i = 0; i < ttlOffsets.length; i++) {
    const t = ttls[i]!
    const aged = t > elapsed ? t - elapsed : 0
    const p = ttlOffsets[i]!
    out[p] = aged >>> 24
    out[p + 1] = (aged >>> 16) & 0xff
    out[p + 2] = (aged >>> 8) & 0xff
    out[p + 3] = aged & 0xff
  }
  if (opt > 0) {
    writeOpt(out, wire.length, info.dnssecOk, 0, null, info.maxUdpSize)
    const ar = ((out[10]! << 8) | out[11]!) + 1
    out[10] = ar >> 8
    out[11] = ar & 0xff
  }
  return out
}

function buildTruncated(wire: Uint8Array, q: Uint8Array, info: QueryInfo): Buffer {
  const end = info.questionEnd
  const out = Buffer.allocUnsafe(end + (info.hasOpt ? OPT_LEN : 0))
  copyBytes(q, 0, end, out, 0)
  out[2] = (wire[2]! & 0xf9) | 0x02 // the upstream's flags, AA/TC replaced by TC
  out[3] = wire[3]!
  setCounts(out, 0, info.hasOpt)
  if (info.hasOpt) writeOpt(out, end, info.dnssecOk, 0, null, info.maxUdpSize)
  return out
}

/**
 * Copies a short range (a header and question, ≤ 271 bytes) with a plain loop:
 * `set(subarray())` allocates a view per call, which showed up in the blocked-path profile.
 */
function copyBytes(src: Uint8Array, start: number, end: number, dst: Uint8Array, at: number): void {
  for (let i = start; i < end; i++) dst[at++] = src[i]!
}

/** Reads the 32-bit TTLs at `offsets`. */
export function readTtls(buf: Uint8Array, offsets: readonly number[]): Uint32Array {
  const out = new Uint32Array(offsets.length)
  for (let i = 0; i < offsets.length; i++) {
    const p = offsets[i]!
    const t = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0
    out[i] = t > 0x7fffffff ? 0 : t
  }
  return out
}

/** An A or AAAA address of an answer (after its CNAME chain), with its TTL in seconds. */
export interface AnswerAddress {
  readonly address: string
  readonly family: 4 | 6
  readonly ttl: number
}

export interface ChainResult {
  /** A/AAAA of the queried name or of a name its CNAME chain reaches inside this answer. */
  addresses: AnswerAddress[]
  /** The last name of the CNAME chain (the queried name when there is none). */
  target: string
}

/**
 * Follows the CNAME chain of the question's name inside the answer section (at most
 * `maxHops` links) and collects the A/AAAA records of every name on it.
 * Off the hot path: called once per upstream answer that the sink or `lookup` needs.
 */
export function extractChain(buf: Uint8Array, len: number, maxHops = 8): ChainResult | null {
  const qname = readName(buf, HEADER_LEN, len)
  if (qname === null) return null
  const an = (buf[6]! << 8) | buf[7]!
  let off = skipName(buf, HEADER_LEN, len)
  if (off < 0) return null
  off += 4
  const rrs: { owner: string; type: number; ttl: number; rdata: number; rdlen: number }[] = []
  for (let i = 0; i < an; i++) {
    const owner = readName(buf, off, len)
    off = skipName(buf, off, len)
    if (owner === null || off < 0 || off + 10 > len) return null
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!
    if (off + 10 + rdlen > len) return null
    rrs.push({
      owner,
      type: (buf[off]! << 8) | buf[off + 1]!,
      ttl: ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0,
      rdata: off + 10,
      rdlen,
    })
    off += 10 + rdlen
  }
  const names = new Set([qname])
  let target = qname
  for (let hop = 0; hop < maxHops; hop++) {
    const link = rrs.find((r) => r.type === TYPE_CNAME && r.owner === target)
    if (link === undefined) break
    const next = readName(buf, link.rdata, len)
    if (next === null || names.has(next)) break
    names.add(next)
    target = next
  }
  const addresses: AnswerAddress[] = []
  for (const r of rrs) {
    if (!names.has(r.owner)) continue
    const ttl = r.ttl > 0x7fffffff ? 0 : r.ttl
    if (r.type === TYPE_A && r.rdlen === 4) addresses.push({ address: formatIp(buf, r.rdata, 4), family: 4, ttl })
    else if (r.type === TYPE_AAAA && r.rdlen === 16) addresses.push({ address: formatIp(buf, r.rdata, 16), family: 6, ttl })
  }
  return { addresses, target }
}
