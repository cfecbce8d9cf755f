import type { Cidr } from '../config/types.js'
import { parseIpInto } from './private-address.js'

/**
 * `dns.clients` compiled for a per-datagram check: IPv4 prefixes as (network, mask)
 * uint32 pairs, IPv6 as byte arrays. An IPv4-mapped IPv6 source (a dual-stack socket)
 * is judged as the IPv4 address it carries. Text that is not an address is refused.
 */
export class ClientAcl {
  private readonly v4net: Uint32Array
  private readonly v4mask: Uint32Array
  private readonly v6: readonly Cidr[]
  private readonly scratch = new Uint8Array(16)
  /** The last address judged: gateways serve few clients, and a flood comes from few sources. */
  private lastAddress = ''
  private lastAllowed = false

  constructor(cidrs: readonly Cidr[]) {
    const v4 = cidrs.filter((c) => c.family === 4)
    this.v4net = new Uint32Array(v4.length)
    this.v4mask = new Uint32Array(v4.length)
    v4.forEach((c, i) => {
      const mask = c.bits === 0 ? 0 : (0xffffffff << (32 - c.bits)) >>> 0
      const b = c.bytes
      this.v4mask[i] = mask
      this.v4net[i] = (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) & mask) >>> 0
    })
    this.v6 = cidrs.filter((c) => c.family === 6)
  }

  allows(address: string): boolean {
    if (address === this.lastAddress) return this.lastAllowed
    const allowed = this.judge(address)
    this.lastAddress = address
    this.lastAllowed = allowed
    return allowed
  }

  private judge(address: string): boolean {
    const s = this.scratch
    const n = parseIpInto(address, s)
    if (n === 4) return this.allowsV4(((s[0]! << 24) | (s[1]! << 16) | (s[2]! << 8) | s[3]!) >>> 0)
    if (n === 0) return false
    let mapped = true
    for (let i = 0; i < 10; i++) if (s[i] !== 0) mapped = false
    if (mapped && s[10] === 0xff && s[11] === 0xff) {
      if (this.allowsV4(((s[12]! << 24) | (s[13]! << 16) | (s[14]! << 8) | s[15]!) >>> 0)) return true
    }
    for (const c of this.v6) if (prefixMatch(s, c.bytes, c.bits)) return true
    return false
  }

  private allowsV4(v: number): boolean {
    const net = this.v4net
    const mask = this.v4mask
    for (let i = 0; i < net.length; i++) if (((v & mask[i]!) >>> 0) === net[i]) return true
    return false
  }
}

function prefixMatch(a: Uint8Array, net: Uint8Array, bits: number): boolean {
  let i = 0
  for (; bits >= 8; bits -= 8, i++) if (a[i] !== net[i]) return false
  if (bits === 0) return true
  const mask = (0xff << (8 - bits)) & 0xff
  return (a[i]! & mask) === (net[i]! & mask)
}
