/**
 * Hand-built DNS messages for the `ech` strip tests: SVCB/HTTPS RDATA from (key, value)
 * params, and a message builder that compresses names the way authoritative servers do
 * (every suffix written in place becomes a target, later names point at the longest
 * match). Building the same message with and without `ech` gives the exact bytes a
 * correct strip must produce, pointers included.
 */

export const KEY = { mandatory: 0, alpn: 1, noDefaultAlpn: 2, port: 3, ipv4hint: 4, ech: 5, ipv6hint: 6 } as const

/** The ECHConfigList of a real HTTPS record (keiji0501.com, public name ech.keiji0501.com). */
export const ECH_CONFIG = Buffer.from(
  'AET+DQBAcQAgACDZo/4gIJ9FBoRC8YXRd+SitXRh5G1zyxLv86j4XG+jPQAEAAEAAQARZWNoLmtlaWppMDUwMS5jb20AAA==',
  'base64',
)

export type Param = [key: number, value: Buffer]

export function alpn(...ids: string[]): Buffer {
  return Buffer.concat(ids.map((id) => Buffer.concat([Buffer.from([id.length]), Buffer.from(id)])))
}

export function u16(...v: number[]): Buffer {
  const b = Buffer.alloc(2 * v.length)
  v.forEach((x, i) => b.writeUInt16BE(x, 2 * i))
  return b
}

export function ipv4(...a: string[]): Buffer {
  return Buffer.from(a.flatMap((x) => x.split('.').map(Number)))
}

export function ipv6(...a: string[]): Buffer {
  return Buffer.concat(
    a.map((x) => {
      const [head, tail] = x.split('::') as [string, string | undefined]
      const h = head ? head.split(':') : []
      const t = tail ? tail.split(':') : []
      const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t]
      return u16(...groups.map((g) => parseInt(g, 16)))
    }),
  )
}

/** SvcParams as written, in the order given (tests of bad order pass them unsorted). */
export function params(list: Param[]): Buffer {
  return Buffer.concat(list.map(([k, v]) => Buffer.concat([u16(k, v.length), v])))
}

/** One part of an RDATA: raw bytes, or a name (compressed when `compress`). */
export type Part = Buffer | { name: string; compress: boolean }

export interface RR {
  name: string
  type: number
  ttl?: number
  rdata: Part[]
  /** An RDLENGTH to write instead of the true one (hostile cases). */
  rdlength?: number
}

export function svcb(name: string, type: 64 | 65, priority: number, target: string, list: Param[], ttl = 300): RR {
  return { name, type, ttl, rdata: [u16(priority), { name: target, compress: false }, params(list)] }
}

export const name = (n: string, compress = true): Part => ({ name: n, compress })

export interface Message {
  id?: number
  flags?: number
  question: { name: string; type: number }
  answer?: RR[]
  authority?: RR[]
  additional?: RR[]
}

/** Encodes a message; names compress against every suffix written earlier. */
export function build(m: Message): Buffer {
  const out: number[] = []
  const seen = new Map<string, number>()
  const put16 = (v: number) => out.push(v >> 8, v & 0xff)
  const putName = (n: string, compress: boolean) => {
    const labels = n === '.' || n === '' ? [] : n.replace(/\.$/, '').split('.')
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels.slice(i).join('.').toLowerCase()
      const at = seen.get(suffix)
      if (compress && at !== undefined) {
        put16(0xc000 | at)
        return
      }
      if (out.length < 0x3fff && !seen.has(suffix)) seen.set(suffix, out.length)
      const l = Buffer.from(labels[i]!)
      out.push(l.length, ...l)
    }
    out.push(0)
  }
  put16(m.id ?? 0x4242)
  put16(m.flags ?? 0x8180)
  const sections = [m.answer ?? [], m.authority ?? [], m.additional ?? []]
  put16(1)
  for (const s of sections) put16(s.length)
  putName(m.question.name, false)
  put16(m.question.type)
  put16(1)
  for (const s of sections) {
    for (const rr of s) {
      putName(rr.name, true)
      put16(rr.type)
      put16(1)
      put16(((rr.ttl ?? 300) >>> 16) & 0xffff)
      put16((rr.ttl ?? 300) & 0xffff)
      const lenAt = out.length
      put16(0)
      const start = out.length
      for (const p of rr.rdata) {
        if (Buffer.isBuffer(p)) out.push(...p)
        else putName(p.name, p.compress)
      }
      const rdlen = rr.rdlength ?? out.length - start
      out[lenAt] = rdlen >> 8
      out[lenAt + 1] = rdlen & 0xff
    }
  }
  return Buffer.from(out)
}
