/**
 * Reads the server_name out of a TLS ClientHello without trusting a byte of it.
 * Pure, as Envoy's tls_inspector parser is: bytes in, `continue | done | error` out; the
 * proxy owns sockets, timers, counters and logs.
 *
 * It is an incremental reader rather than a function that re-parses the whole buffer on
 * every TCP segment: a client that dribbles its hello one byte per segment (or in 1-byte
 * TLS records) would otherwise cost O(n²) in the hello size, and the hello may be up to
 * 64 KiB by configuration. The reader keeps only offsets into the caller's buffer (which
 * the proxy keeps anyway, to forward the hello unchanged) and, only when the handshake
 * message spans several TLS records, one reassembly buffer of the message's declared size.
 * The common case (the whole hello in one record) is parsed in place, allocating nothing
 * but the result and the name string.
 */
import { describeBadName, judgeServerName, serverNameString } from './server-name.js'

export type HelloReason =
  | 'not_tls' // first byte is not a TLS record type (HTTP, SSH…) or the record version is not 3.x
  | 'sslv2' // high bit set in the first byte: an SSLv2-style hello
  | 'not_handshake' // a record other than handshake (ChangeCipherSpec, alert, data) before the hello
  | 'not_client_hello' // the first handshake message is not a ClientHello
  | 'bad_length' // some length disagrees with its container, or a zero-length / oversized record
  | 'no_sni' // no extensions, or no server_name extension
  | 'multiple_names' // two host_name entries, or two server_name extensions (RFC 6066: malformed)
  | 'unknown_name_type' // a server_name entry other than host_name(0)
  | 'ip_literal' // the host name is an IPv4 or IPv6 literal
  | 'bad_name' // bytes outside a host name's alphabet, empty or long labels, long name
  | 'too_large' // the hello does not fit in maxBytes

export type HelloResult =
  | { readonly kind: 'continue' }
  | {
      readonly kind: 'done'
      /** Lowercase, without a trailing dot. */
      readonly serverName: string
      /** Bytes from the start of the stream to the end of the record that completed the hello. */
      readonly helloBytes: number
      /** The hello carried encrypted_client_hello (0xfe0d); see `ClientHelloReader`. */
      readonly ech: boolean
    }
  | {
      readonly kind: 'error'
      readonly reason: HelloReason
      /** The offending name for `ip_literal` (as text) and `bad_name` (escaped); otherwise null. */
      readonly name: string | null
    }

/** Largest TLSPlaintext fragment (RFC 8446 §5.1). */
const MAX_RECORD = 16_384
const RECORD_HEADER = 5
const HANDSHAKE_HEADER = 4
const CONTENT_HANDSHAKE = 22
const HANDSHAKE_CLIENT_HELLO = 1
const EXT_SERVER_NAME = 0x0000
const EXT_ECH = 0xfe0d
const NAME_TYPE_HOST = 0

const CONTINUE: HelloResult = Object.freeze({ kind: 'continue' })
const ERRORS = new Map<HelloReason, HelloResult>()
function fail(reason: HelloReason, name: string | null = null): HelloResult {
  if (name !== null) return { kind: 'error', reason, name }
  let r = ERRORS.get(reason)
  if (r === undefined) {
    r = Object.freeze({ kind: 'error', reason, name: null })
    ERRORS.set(reason, r)
  }
  return r
}

/**
 * One per connection. Call `read(buf, length)` each time bytes were appended to `buf`
 * (the caller's buffer, always starting at the first byte of the stream); the reader
 * resumes where it stopped. After `done` or `error` it must not be called again.
 *
 * Limits: the whole hello (handshake header included) may be at most `maxBytes`, and the
 * records carrying it must end within `maxBytes + 5` stream bytes (one record header of
 * slack), so a caller never needs to buffer more than `maxBytes + 5` bytes to get a
 * verdict. `too_large` is reported as soon as a header announces a length past that,
 * without waiting for the bytes.
 *
 * ECH (encrypted_client_hello, 0xfe0d): the real server name travels encrypted; the
 * outer hello's server_name is the client-facing server's public name. egressd judges
 * that outer name like any other and reports `ech: true`, so an allowlist that wants
 * ECH traffic to a provider lists the provider's public name.
 */
export class ClientHelloReader {
  /** Offset of the next record header in the stream. */
  private next = 0
  /** Handshake bytes gathered so far, header included. */
  private gathered = 0
  /** Whole handshake message length (header included) once its header is known; -1 before. */
  private need = -1
  private readonly header = new Uint8Array(HANDSHAKE_HEADER)
  /** Reassembly buffer for the message body, only when it spans records. */
  private body: Uint8Array | null = null

  constructor(readonly maxBytes: number) {}

  read(buf: Uint8Array, length: number): HelloResult {
    for (;;) {
      const at = this.next
      // A record needs at least one payload byte; one starting at maxBytes cannot end by maxBytes + 5.
      if (at >= this.maxBytes) return fail('too_large')
      const available = length - at
      if (available <= 0) return CONTINUE
      const early = checkRecordHeader(buf, at, Math.min(available, 3), at === 0)
      if (early !== null) return early
      if (available < RECORD_HEADER) return CONTINUE
      const recordLength = (buf[at + 3]! << 8) | buf[at + 4]!
      if (recordLength === 0 || recordLength > MAX_RECORD) return fail('bad_length')
      if (at + recordLength > this.maxBytes) return fail('too_large')
      const start = at + RECORD_HEADER
      const end = start + recordLength
      if (length < end) return CONTINUE
      this.next = end
      const result = this.consume(buf, start, end)
      if (result !== null) return result
    }
  }

  /** Takes one complete handshake record's payload; null when the message needs more records. */
  private consume(buf: Uint8Array, start: number, end: number): HelloResult | null {
    let p = start
    if (this.need < 0) {
      while (this.gathered < HANDSHAKE_HEADER && p < end) this.header[this.gathered++] = buf[p++]!
      if (this.gathered < HANDSHAKE_HEADER) return null // header split across records
      const h = this.header
      if (h[0] !== HANDSHAKE_CLIENT_HELLO) return fail('not_client_hello')
      const bodyLength = (h[1]! << 16) | (h[2]! << 8) | h[3]!
      if (bodyLength + HANDSHAKE_HEADER > this.maxBytes) return fail('too_large')
      this.need = bodyLength + HANDSHAKE_HEADER
      // Fast path: the whole message is in this record, parse it where it lies.
      if (end - p >= bodyLength) return end - p === bodyLength ? parseClientHello(buf, p, end, end) : fail('bad_length')
      this.body = new Uint8Array(bodyLength)
    }
    const body = this.body!
    const take = Math.min(end - p, this.need - this.gathered)
    body.set(buf.subarray(p, p + take), this.gathered - HANDSHAKE_HEADER)
    this.gathered += take
    if (this.gathered < this.need) return null
    // Nothing follows a ClientHello in its flight: bytes after it in the same record
    // mean a record or handshake length lies.
    if (p + take !== end) return fail('bad_length')
    return parseClientHello(body, 0, body.length, end)
  }
}

/** Whole-buffer form for callers that have all the bytes (tests, benchmarks, tools). */
export function readClientHello(buf: Uint8Array, length: number, maxBytes: number): HelloResult {
  return new ClientHelloReader(maxBytes).read(buf, length)
}

/**
 * Checks the first `n` (1–3) bytes of a record header: content type and version. The
 * first record gets a finer diagnosis, since that is where HTTP or SSLv2 shows.
 */
function checkRecordHeader(buf: Uint8Array, at: number, n: number, first: boolean): HelloResult | null {
  const type = buf[at]!
  if (type !== CONTENT_HANDSHAKE) {
    if (!first) return fail('not_handshake')
    if (type & 0x80) return fail('sslv2')
    // change_cipher_spec, alert, application_data: TLS, but not a hello.
    return type >= 20 && type <= 23 ? fail('not_handshake') : fail('not_tls')
  }
  if (n >= 2 && buf[at + 1] !== 3) return fail('not_tls')
  // 3.0 to 3.4 are in use; the record version is frozen at 3.1–3.3 in practice, so
  // anything in 3.0x passes and the rest is not TLS.
  if (n >= 3 && (buf[at + 2]! & 0xf0) !== 0) return fail('not_tls')
  return null
}

function u16(b: Uint8Array, p: number): number {
  return (b[p]! << 8) | b[p + 1]!
}

/**
 * Parses a ClientHello body `b[p, end)` (after the 4-byte handshake header). Every
 * length is checked against its container; the extensions block must fill the body
 * exactly. `helloBytes` is the stream offset to report on success.
 */
function parseClientHello(b: Uint8Array, p: number, end: number, helloBytes: number): HelloResult {
  // legacy_version(2) random(32) session_id length(1)
  if (end - p < 35) return fail('bad_length')
  p += 34
  const sessionIdLength = b[p++]!
  if (sessionIdLength > 32) return fail('bad_length')
  p += sessionIdLength
  if (p + 2 > end) return fail('bad_length')
  const suitesLength = u16(b, p)
  p += 2
  if (suitesLength < 2 || (suitesLength & 1) !== 0 || p + suitesLength > end) return fail('bad_length')
  p += suitesLength
  if (p + 1 > end) return fail('bad_length')
  const compressionLength = b[p++]!
  if (compressionLength < 1 || p + compressionLength > end) return fail('bad_length')
  p += compressionLength
  if (p === end) return fail('no_sni') // a TLS 1.0-style hello without extensions
  if (p + 2 > end) return fail('bad_length')
  const extensionsLength = u16(b, p)
  p += 2
  if (p + extensionsLength !== end) return fail('bad_length')

  let sniSeen = false
  let ech = false
  let nameStart = -1
  let nameEnd = -1
  while (p < end) {
    if (p + 4 > end) return fail('bad_length')
    const type = u16(b, p)
    const length = u16(b, p + 2)
    p += 4
    const extEnd = p + length
    if (extEnd > end) return fail('bad_length')
    if (type === EXT_SERVER_NAME) {
      if (sniSeen) return fail('multiple_names')
      sniSeen = true
      // ServerNameList: length(2), then entries of type(1) length(2) bytes; never empty.
      if (length < 2) return fail('bad_length')
      const listLength = u16(b, p)
      if (listLength === 0 || listLength + 2 !== length) return fail('bad_length')
      let q = p + 2
      while (q < extEnd) {
        if (q + 3 > extEnd) return fail('bad_length')
        const nameType = b[q]!
        const nameLength = u16(b, q + 1)
        q += 3
        if (q + nameLength > extEnd) return fail('bad_length')
        // RFC 6066 defines only host_name, and an entry of another type cannot be
        // skipped safely by a server that reads the first entry as the host name:
        // refuse it rather than let a second, unjudged name ride along.
        if (nameType !== NAME_TYPE_HOST) return fail('unknown_name_type')
        if (nameStart >= 0) return fail('multiple_names')
        nameStart = q
        nameEnd = q + nameLength
        q += nameLength
      }
    } else if (type === EXT_ECH) {
      ech = true
    }
    p = extEnd
  }
  if (!sniSeen) return fail('no_sni')

  const verdict = judgeServerName(b, nameStart, nameEnd)
  if (verdict === 'ip_literal') return fail('ip_literal', serverNameString(b, nameStart, nameEnd))
  if (verdict === 'bad_name') return fail('bad_name', describeBadName(b, nameStart, nameEnd))
  return { kind: 'done', serverName: serverNameString(b, nameStart, nameEnd), helloBytes, ech }
}
