import { covered, overlaps } from '../net/cidr.js'
import type { PortSpec } from '../policy/types.js'
import type { Config, GroupConfig } from './types.js'

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
