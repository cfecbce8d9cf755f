import { isV4Mapped, parseIpInto, v4ToUint32 } from './address.js'
import { prefixEqual, type Cidr } from './cidr.js'

/**
 * CIDRs compiled for a per-packet lookup, shared by the client ACL and group selection:
 * IPv4 prefixes as (network, mask) uint32 pairs, IPv6 as byte arrays, each carrying a
 * value. `lookup` returns the value of the first entry (in input order, per family) that
 * contains the address, or -1. An IPv4-mapped IPv6 source (what a dual-stack socket
 * reports) is judged as the IPv4 address it carries first. Text that is not an
 * address gives -1. No allocation per lookup.
 */
export class CidrTable {
  private readonly v4net: Uint32Array
  private readonly v4mask: Uint32Array
  private readonly v4value: Int32Array
  private readonly v6: readonly { readonly bytes: Uint8Array; readonly bits: number; readonly value: number }[]
  private readonly scratch = new Uint8Array(16)
  /** The last address looked up: gateways serve few clients, and a flood comes from few sources. */
  private lastAddress = ''
  private lastValue = -1

  constructor(entries: readonly { readonly cidr: Cidr; readonly value: number }[]) {
    const v4 = entries.filter((e) => e.cidr.family === 4)
    this.v4net = new Uint32Array(v4.length)
    this.v4mask = new Uint32Array(v4.length)
    this.v4value = Int32Array.from(v4, (e) => e.value)
    v4.forEach(({ cidr }, i) => {
      const mask = cidr.bits === 0 ? 0 : (0xffffffff << (32 - cidr.bits)) >>> 0
      this.v4mask[i] = mask
      this.v4net[i] = (v4ToUint32(cidr.bytes) & mask) >>> 0
    })
    this.v6 = entries.filter((e) => e.cidr.family === 6).map((e) => ({ bytes: e.cidr.bytes, bits: e.cidr.bits, value: e.value }))
  }

  lookup(address: string): number {
    if (address === this.lastAddress) return this.lastValue
    const value = this.find(address)
    this.lastAddress = address
    this.lastValue = value
    return value
  }

  private find(address: string): number {
    const s = this.scratch
    const n = parseIpInto(address, s)
    if (n === 4) return this.findV4(v4ToUint32(s))
    if (n === 0) return -1
    if (isV4Mapped(s)) {
      const v = this.findV4(v4ToUint32(s, 12))
      if (v >= 0) return v
    }
    for (const c of this.v6) if (prefixEqual(s, c.bytes, c.bits)) return c.value
    return -1
  }

  private findV4(v: number): number {
    const net = this.v4net
    const mask = this.v4mask
    for (let i = 0; i < net.length; i++) if (((v & mask[i]!) >>> 0) === net[i]) return this.v4value[i]!
    return -1
  }
}
