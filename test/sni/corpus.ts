/**
 * The named ClientHello corpus, as Envoy's tls_inspector keeps one: every case runs
 * through the pure reader; the cases marked `socket` also run through the proxy.
 */
import { buildClientHello } from '../helpers/client-hello-builder.js'
import type { HelloReason } from '../../src/sni/client-hello.js'

export interface HelloCase {
  readonly name: string
  readonly bytes: Uint8Array
  /** How a socket test writes the bytes: all at once, one byte per write, or these chunk sizes. */
  readonly writes: 'whole' | 'bytewise' | number[]
  readonly expect: { kind: 'done'; serverName: string; ech?: boolean } | { kind: 'error'; reason: HelloReason }
  /** Verdict the proxy must count when this case is sent (and nothing more) through it. */
  readonly verdict: 'allowed' | 'blocked' | 'malformed'
  readonly socket: boolean
}

const enc = new TextEncoder()
const ALLOWED = 'allowed.test'

function ok(name: string, bytes: Uint8Array, serverName = ALLOWED, writes: HelloCase['writes'] = 'whole'): HelloCase {
  return { name, bytes, writes, expect: { kind: 'done', serverName }, verdict: 'allowed', socket: true }
}

function bad(name: string, bytes: Uint8Array, reason: HelloReason, socket = true): HelloCase {
  const verdict = reason === 'ip_literal' || reason === 'bad_name' ? 'blocked' : 'malformed'
  return { name, bytes, writes: 'whole', expect: { kind: 'error', reason }, verdict, socket }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** Grows the record at `at` by one byte of junk at its end (the last record of `bytes`). */
function junkInLastRecord(bytes: Uint8Array, at: number): Uint8Array {
  const out = concat(bytes, Uint8Array.from([0]))
  const length = ((out[at + 3]! << 8) | out[at + 4]!) + 1
  out[at + 3] = length >> 8
  out[at + 4] = length & 0xff
  return out
}

const valid = buildClientHello({ sni: ALLOWED, alpn: ['h2', 'http/1.1'] })
// Chrome's X25519MLKEM768 hello: ~1.8 KB, more than one 1500-byte segment; here split in 2 records.
const pq = buildClientHello({ sni: ALLOWED, pq: true, alpn: ['h2'], extraExtensionBytes: 360, recordSplit: [1000] })

export const corpus: HelloCase[] = [
  ok('valid', valid),
  ok('valid, uppercase and trailing dot', buildClientHello({ sni: 'Allowed.TEST.' })),
  { ...ok('valid with ECH', buildClientHello({ sni: ALLOWED, ech: true })), expect: { kind: 'done', serverName: ALLOWED, ech: true } },
  ok('split into 3 records', buildClientHello({ sni: ALLOWED, recordSplit: [40, 30] })),
  ok('handshake header split across records', buildClientHello({ sni: ALLOWED, recordSplit: [2, 1] })),
  ok('1-byte records', buildClientHello({ sni: ALLOWED, recordSplit: new Array(300).fill(1) })),
  ok('split into 1-byte TCP writes', valid, ALLOWED, 'bytewise'),
  ok('split into uneven TCP writes', valid, ALLOWED, [1, 4, 2, 60, 3]),
  ok('PQ-sized hello (~1.8 KB) across 2 records', pq),
  ok('valid with padding to 4 KB', buildClientHello({ sni: ALLOWED, extraExtensionBytes: 4000 })),
  ok('name with underscore and hyphen edges', buildClientHello({ sni: '_srv.-a-.allowed.test' }), '_srv.-a-.allowed.test'),
  ok('valid followed by application data', concat(valid, Uint8Array.from([23, 3, 3, 0, 3, 1, 2, 3]))),

  bad('no SNI', buildClientHello({}), 'no_sni'),
  bad('no extensions block', buildClientHello({ noExtensions: true }), 'no_sni'),
  bad('two names', buildClientHello({ sni: [ALLOWED, 'other.test'] }), 'multiple_names'),
  bad('two server_name extensions', buildClientHello({ sni: ALLOWED, sniExtensions: 2 }), 'multiple_names'),
  bad('name type other than host_name', buildClientHello({ sni: ALLOWED, nameType: 1 }), 'unknown_name_type'),
  bad('IPv4 literal', buildClientHello({ sni: '127.0.0.1' }), 'ip_literal'),
  bad('IPv4 short form', buildClientHello({ sni: '127.1' }), 'ip_literal'),
  bad('IPv4 decimal', buildClientHello({ sni: '2130706433' }), 'ip_literal'),
  bad('IPv4 hex label', buildClientHello({ sni: 'a.0x7f' }), 'ip_literal'),
  bad('IPv6 literal', buildClientHello({ sni: '::1' }), 'ip_literal'),
  bad('IPv6 literal in brackets', buildClientHello({ sni: '[2001:db8::1]' }), 'ip_literal'),
  bad('NUL in name', buildClientHello({ sni: enc.encode('allowed.test\0.evil.test') }), 'bad_name'),
  bad('space in name', buildClientHello({ sni: 'allowed .test' }), 'bad_name'),
  bad('non-ASCII name', buildClientHello({ sni: enc.encode('bücher.test') }), 'bad_name'),
  bad('empty label', buildClientHello({ sni: 'allowed..test' }), 'bad_name'),
  bad('leading dot', buildClientHello({ sni: '.allowed.test' }), 'bad_name'),
  bad('two trailing dots', buildClientHello({ sni: 'allowed.test..' }), 'bad_name'),
  bad('empty name', buildClientHello({ sni: '' }), 'bad_name'),
  bad('label of 64 bytes', buildClientHello({ sni: 'a'.repeat(64) + '.test' }), 'bad_name'),
  bad('name of 254 bytes', buildClientHello({ sni: ('a'.repeat(62) + '.').repeat(4) + 'ab' }), 'bad_name'),
  bad('oversized (hello > 16384)', buildClientHello({ sni: ALLOWED, extraExtensionBytes: 17_000, recordSplit: [16_000] }), 'too_large'),
  bad('lying record length (longer, junk after the hello)', concat(buildClientHello({ sni: ALLOWED, lie: { field: 'record', delta: 4 } }), Uint8Array.from([1, 0, 0, 0])), 'bad_length'),
  bad('lying record length (junk after a fragmented hello)', junkInLastRecord(buildClientHello({ sni: ALLOWED, recordSplit: [50] }), 55), 'bad_length'),
  bad('lying handshake length', buildClientHello({ sni: ALLOWED, lie: { field: 'handshake', delta: -7 } }), 'bad_length'),
  bad('lying extensions length', buildClientHello({ sni: ALLOWED, lie: { field: 'extensions', delta: 3 } }), 'bad_length'),
  bad('lying extension length', buildClientHello({ sni: ALLOWED, lie: { field: 'extension', delta: 1000 } }), 'bad_length'),
  bad('lying SNI list length', buildClientHello({ sni: ALLOWED, lie: { field: 'sni_list', delta: 2 } }), 'bad_length'),
  bad('lying host name length', buildClientHello({ sni: ALLOWED, lie: { field: 'host_name', delta: 40 } }), 'bad_length'),
  bad('session id longer than 32', buildClientHello({ sni: ALLOWED, lie: { field: 'session_id', delta: 1 } }), 'bad_length'),
  bad('zero-length record', concat(Uint8Array.from([22, 3, 1, 0, 0]), valid), 'bad_length'),
  bad('record longer than 2^14', Uint8Array.from([22, 3, 1, 0x40, 0x01, 1, 0, 0, 0]), 'bad_length'),
  bad('record version 2.0', buildClientHello({ sni: ALLOWED, recordVersion: 0x0201 }), 'not_tls'),
  bad('record version 3.16', buildClientHello({ sni: ALLOWED, recordVersion: 0x0310 }), 'not_tls'),
  bad('not a ClientHello (ServerHello)', buildClientHello({ sni: ALLOWED, handshakeType: 2 }), 'not_client_hello'),
  bad('HTTP', enc.encode('GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n'), 'not_tls'),
  bad('SSLv2 hello', Uint8Array.from([0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]), 'sslv2'),
  bad('ChangeCipherSpec before hello', concat(Uint8Array.from([20, 3, 3, 0, 1, 1]), valid), 'not_handshake'),
  bad('alert before hello', concat(Uint8Array.from([21, 3, 3, 0, 2, 2, 40]), valid), 'not_handshake'),
  bad('alert between hello records', concat(Uint8Array.from([22, 3, 1, 0, 2, 1, 0]), Uint8Array.from([21, 3, 3, 0, 2, 2, 40])), 'not_handshake'),
]

/** A hello whose first bytes are well-formed and then stops: for the slowloris and timeout tests. */
export const stalledPrefix = valid.subarray(0, 10)
