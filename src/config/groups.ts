import type { PortSpec } from '../policy/types.js'
import { cidrsContain } from './net.js'
import type { Cidr, Config, GroupConfig } from './types.js'

export const DEFAULT_GROUP = 'default'

/**
 * What `mode: report` opens in the firewall sink for a name no entry names: the two
 * ports the fleets' guides need (TLS and NTP), so a device being onboarded really works.
 */
export const DEFAULT_REPORT_PORTS: readonly PortSpec[] = Object.freeze([
  Object.freeze({ port: 443, proto: 'tcp' as const }),
  Object.freeze({ port: 123, proto: 'udp' as const }),
])

/** The implicit group made of the top-level presets/allow/deny/mode/report. */
export function defaultGroup(config: Config): GroupConfig {
  return {
    name: DEFAULT_GROUP,
    clients: [],
    presets: config.presets,
    policy: config.policy,
    mode: config.mode ?? 'enforce',
    report: config.report ?? [],
    reportPorts: config.reportPorts ?? DEFAULT_REPORT_PORTS,
    source: config.file,
  }
}

/** Named groups in order, then `default`: the order a client is matched in. */
export function allGroups(config: Config): GroupConfig[] {
  return [...(config.groups ?? []), defaultGroup(config)]
}

/**
 * The group a client address (4 or 16 bytes) falls in, and the CIDR that put it there
 * (null for `default`). For explanations (`check --client`); the daemon's hot path
 * uses the compiled selector in src/policy/groups.ts.
 */
export function groupOf(config: Config, addr: Uint8Array): { group: GroupConfig; cidr: Cidr | null } {
  for (const g of config.groups ?? []) {
    for (const c of g.clients) if (cidrsContain([c], addr)) return { group: g, cidr: c }
  }
  return { group: defaultGroup(config), cidr: null }
}

/**
 * Legal but probably unintended: a group every one of whose clients an earlier group
 * already takes (first match wins, so it is never chosen), and group clients outside
 * `dns.clients` (their DNS queries are refused before any group is consulted).
 */
export function groupWarnings(config: Config): string[] {
  const out: string[] = []
  const groups = config.groups ?? []
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i]!
    const earlier = groups.slice(0, i).flatMap((e) => e.clients)
    if (g.clients.length > 0 && g.clients.every((c) => covered(c, earlier))) {
      const by = groups.slice(0, i).filter((e) => g.clients.some((c) => e.clients.some((x) => overlaps(c, x)))).map((e) => `"${e.name}"`)
      out.push(`${g.source}: warning: group "${g.name}" is never chosen: every client in it falls in an earlier group (${by.join(', ')}); the first group that contains a client wins`)
    }
    const outside = g.clients.filter((c) => !covered(c, config.dns.clients))
    if (outside.length > 0) {
      out.push(`${g.source}: warning: group "${g.name}" clients ${outside.map((c) => c.text).join(', ')} are not all within dns.clients: their DNS queries are refused`)
    }
  }
  return out
}

/** Whether the union of `by` contains every address of `c` (same family only). */
export function covered(c: Cidr, by: readonly Cidr[]): boolean {
  const same = by.filter((x) => x.family === c.family)
  return coveredBits(c.bytes, c.bits, same)
}

function coveredBits(net: Uint8Array, bits: number, by: readonly Cidr[]): boolean {
  // One CIDR containing all of it: done. Otherwise only CIDRs strictly inside it can
  // help; split in halves and require both (depth ≤ 128, and only while some
  // narrower CIDR is still inside the half being looked at).
  if (by.some((x) => x.bits <= bits && prefixEqual(net, x.bytes, x.bits))) return true
  const inside = by.filter((x) => x.bits > bits && prefixEqual(net, x.bytes, bits))
  if (inside.length === 0 || bits >= net.length * 8) return false
  const low = net.slice()
  const high = net.slice()
  high[bits >> 3]! |= 0x80 >> (bits & 7)
  return coveredBits(low, bits + 1, inside) && coveredBits(high, bits + 1, inside)
}

function prefixEqual(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  let i = 0
  for (; bits >= 8; bits -= 8, i++) if (a[i] !== b[i]) return false
  if (bits === 0) return true
  const mask = (0xff << (8 - bits)) & 0xff
  return ((a[i]! ^ b[i]!) & mask) === 0
}

function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && prefixEqual(a.bytes, b.bytes, Math.min(a.bits, b.bits))
}
