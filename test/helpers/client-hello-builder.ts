/**
 * Builds TLS ClientHello records byte by byte for tests and benchmarks, like Envoy's
 * `generateClientHello(sni, alpn)`, plus the knobs the SNI corpus needs: several or raw
 * names, record fragmentation, a post-quantum-sized key_share, ECH, and lengths that lie.
 */

export type LieField =
  | 'record' // TLSPlaintext.length of the first record
  | 'handshake' // Handshake.length
  | 'extensions' // the extensions block length
  | 'extension' // the server_name extension's length
  | 'sni_list' // ServerNameList length
  | 'host_name' // the first HostName length
  | 'session_id' // session id length byte

export interface ClientHelloOptions {
  /** One name, several (each a host_name entry), or raw bytes; omitted: no server_name extension. */
  sni?: string | string[] | Uint8Array
  /** name_type of every entry; 0 (host_name) unless set. */
  nameType?: number
  /** Repeat the server_name extension this many times (default 1). */
  sniExtensions?: number
  alpn?: string[]
  /** A padding extension (21) of this many bytes. */
  extraExtensionBytes?: number
  /** Add an encrypted_client_hello (0xfe0d) extension with a dummy payload. */
  ech?: boolean
  /** Add an X25519MLKEM768 key share (1216 bytes) next to X25519, as Chrome and Firefox send. */
  pq?: boolean
  /** Payload sizes of the leading records; the last record takes the rest. */
  recordSplit?: number[]
  /** Omit the extensions block entirely (TLS 1.0-style hello). */
  noExtensions?: boolean
  /** Record layer version, default 0x0301. */
  recordVersion?: number
  /** Handshake message type, default 1 (ClientHello). */
  handshakeType?: number
  /** Add `delta` to one declared length, leaving the bytes as they are. */
  lie?: { field: LieField; delta: number }
}

const enc = new TextEncoder()

function u16(n: number): number[] {
  return [(n >> 8) & 0xff, n & 0xff]
}

function u24(n: number): number[] {
  return [(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]
}

function ext(type: number, data: number[]): number[] {
  return [...u16(type), ...u16(data.length), ...data]
}

function filler(n: number, seed: number): number[] {
  const out = new Array<number>(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    out[i] = x & 0xff
  }
  return out
}

export function buildClientHello(o: ClientHelloOptions = {}): Uint8Array {
  const lie = (field: LieField): number => (o.lie?.field === field ? o.lie.delta : 0)
  const extensions: number[] = []
  if (o.sni !== undefined) {
    const names: Uint8Array[] =
      o.sni instanceof Uint8Array ? [o.sni] : (Array.isArray(o.sni) ? o.sni : [o.sni]).map((n) => enc.encode(n))
    const list: number[] = []
    names.forEach((n, i) => {
      list.push(o.nameType ?? 0, ...u16(n.length + (i === 0 ? lie('host_name') : 0)), ...n)
    })
    const data = [...u16(list.length + lie('sni_list')), ...list]
    for (let i = 0; i < (o.sniExtensions ?? 1); i++) {
      extensions.push(...u16(0), ...u16(data.length + lie('extension')), ...data)
    }
  }
  extensions.push(...ext(10, [...u16(6), ...u16(0x11ec), ...u16(0x001d), ...u16(0x0017)])) // supported_groups
  extensions.push(...ext(13, [...u16(4), ...u16(0x0403), ...u16(0x0804)])) // signature_algorithms
  extensions.push(...ext(43, [4, ...u16(0x0304), ...u16(0x0303)])) // supported_versions
  if (o.alpn !== undefined) {
    const protos: number[] = []
    for (const p of o.alpn) protos.push(p.length, ...enc.encode(p))
    extensions.push(...ext(16, [...u16(protos.length), ...protos]))
  }
  const shares: number[] = []
  if (o.pq === true) shares.push(...u16(0x11ec), ...u16(1216), ...filler(1216, 7))
  shares.push(...u16(0x001d), ...u16(32), ...filler(32, 11))
  extensions.push(...ext(51, [...u16(shares.length), ...shares])) // key_share
  if (o.ech === true) extensions.push(...ext(0xfe0d, [0, ...u16(1), ...u16(1), 7, ...u16(32), ...filler(32, 3), ...u16(64), ...filler(64, 5)]))
  if (o.extraExtensionBytes !== undefined) extensions.push(...ext(21, new Array<number>(o.extraExtensionBytes).fill(0)))

  const body: number[] = [...u16(0x0303), ...filler(32, 1)]
  body.push(32 + lie('session_id'), ...filler(32, 2))
  body.push(...u16(8), ...u16(0x1301), ...u16(0x1302), ...u16(0x1303), ...u16(0xc02f))
  body.push(1, 0)
  if (o.noExtensions !== true) body.push(...u16(extensions.length + lie('extensions')), ...extensions)

  const handshake = [o.handshakeType ?? 1, ...u24(body.length + lie('handshake')), ...body]

  const sizes: number[] = []
  let left = handshake.length
  for (const s of o.recordSplit ?? []) {
    if (s >= left) break
    sizes.push(s)
    left -= s
  }
  sizes.push(left)
  const out: number[] = []
  let at = 0
  sizes.forEach((size, i) => {
    out.push(22, ...u16(o.recordVersion ?? 0x0301), ...u16(size + (i === 0 ? lie('record') : 0)))
    out.push(...handshake.slice(at, at + size))
    at += size
  })
  return Uint8Array.from(out)
}
