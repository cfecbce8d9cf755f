import { readdirSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMap, isScalar, Scalar, type Node } from 'yaml'
import { ConfigError, ConfigErrors } from '../errors.js'
import { expandPattern, PatternError } from '../policy/pattern.js'
import { findWarnings } from '../policy/compile.js'
import { DEFAULT_PORTS, type Action, type PolicyEntry, type PortSpec } from '../policy/types.js'
import { didYouMean } from './did-you-mean.js'
import { parseCidr, parseHostPort } from './net.js'
import { readResolvConf } from './resolv-conf.js'
import { DEFAULT_REPORT_PORTS, groupWarnings } from './groups.js'
import type { Cidr, Config, GroupConfig, GroupMode, HostPort } from './types.js'
import { describe, YamlReader } from './yaml-reader.js'

/** Shipped next to dist/ and src/: both are two levels below the package root. */
export const PRESETS_DIR = fileURLToPath(new URL('../../config/presets/', import.meta.url))

const DEFAULT_CLIENTS = ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
const MODES = ['enforce', 'report'] as const
const GROUP_KEYS = ['name', 'clients', 'presets', 'allow', 'deny', 'mode', 'report', 'report_ports']


export interface LoadOptions {
  /** Where `presets:` names are looked up; the shipped config/presets by default. */
  presetsDir?: string
  /** For tests: the file `dns.upstreams: []` falls back to. */
  resolvConf?: string
}

export interface LoadedConfig {
  config: Config
  /** Duplicate and shadowed entries: legal, but worth a line from `validate`. */
  warnings: string[]
}

/** Reads and validates a configuration file; throws ConfigErrors listing every problem. */
export function loadConfig(file: string, options: LoadOptions = {}): LoadedConfig {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message
    throw new ConfigErrors([new ConfigError(file, 1, 1, `cannot read configuration: ${reason}`)])
  }
  return parseConfig(file, text, options)
}

export function parseConfig(file: string, text: string, options: LoadOptions = {}): LoadedConfig {
  const r = new YamlReader(file, text)
  if (r.errors.length > 0) throw new ConfigErrors(r.errors)
  const top = r.map(r.root, '', ['dns', 'sni', 'metrics', 'firewall', 'log', 'presets', 'allow', 'deny', 'mode', 'report', 'report_ports', 'groups'])

  const dnsKeys = r.map(top.get('dns'), 'dns', [
    'listen', 'upstreams', 'block_response', 'rebind_protection', 'rebind_exempt', 'clients',
    'upstream_timeout_ms', 'max_pending_upstream', 'max_tcp_connections', 'tcp_idle_timeout_ms', 'cache', 'rate_limit',
  ])
  const cacheKeys = r.map(dnsKeys.get('cache'), 'dns.cache', ['max_entries', 'max_bytes', 'min_ttl', 'max_ttl', 'negative_max_ttl'])
  const rateKeys = r.map(dnsKeys.get('rate_limit'), 'dns.rate_limit', ['qps', 'burst'])
  const sniKeys = r.map(top.get('sni'), 'sni', [
    'listen', 'upstream_port', 'on_block', 'allow_private_destinations', 'max_client_hello_bytes',
    'handshake_timeout_ms', 'connect_timeout_ms', 'idle_timeout_ms', 'max_connections', 'shutdown_grace_ms',
  ])
  const metricsKeys = r.map(top.get('metrics'), 'metrics', ['listen', 'blocked_names_max'])
  const firewallKeys = r.map(top.get('firewall'), 'firewall', ['nftables'])
  const nftKeys = r.map(firewallKeys.get('nftables'), 'firewall.nftables', ['enabled', 'table', 'grace_seconds'])
  const logKeys = r.map(top.get('log'), 'log', ['level'])

  const upstreamsNode = dnsKeys.get('upstreams')
  let upstreams = hostPorts(r, upstreamsNode, 'dns.upstreams', [])
  if (upstreams.length === 0) upstreams = readResolvConf(options.resolvConf)

  // Preset files are read once per configuration even when several groups name them.
  const presetCache = new Map<string, PolicyEntry[]>()
  const presets = presetNames(r, top.get('presets'), options.presetsDir ?? PRESETS_DIR)
  const policy: PolicyEntry[] = []
  for (const name of presets) policy.push(...loadPreset(name, options.presetsDir ?? PRESETS_DIR, r.errors, presetCache))
  policy.push(...entries(r, top.get('allow'), 'allow', 'allow'))
  policy.push(...entries(r, top.get('deny'), 'deny', 'deny'))
  const rebindExempt = entries(r, dnsKeys.get('rebind_exempt'), 'dns.rebind_exempt', 'allow')
  const presetsDir = options.presetsDir ?? PRESETS_DIR
  const mode: GroupMode = r.oneOf(top.get('mode'), 'mode', MODES, 'enforce')
  const report = entries(r, top.get('report'), 'report', 'allow')
  const reportPorts = top.has('report_ports') ? portList(r, top.get('report_ports'), 'report_ports') : DEFAULT_REPORT_PORTS
  const groups = groupList(r, top.get('groups'), presetsDir, presetCache)

  const metricsListen = metricsKeys.get('listen')
  const config: Config = {
    file,
    dns: {
      listen: hostPorts(r, dnsKeys.get('listen'), 'dns.listen', ['127.0.0.1:5353']),
      upstreams,
      blockResponse: r.oneOf(dnsKeys.get('block_response'), 'dns.block_response', ['nxdomain', 'refused'], 'nxdomain'),
      rebindProtection: r.bool(dnsKeys.get('rebind_protection'), 'dns.rebind_protection', true),
      rebindExempt,
      clients: cidrs(r, dnsKeys.get('clients'), 'dns.clients', DEFAULT_CLIENTS),
      upstreamTimeoutMs: r.int(dnsKeys.get('upstream_timeout_ms'), 'dns.upstream_timeout_ms', 2000, 50, 60_000),
      maxPendingUpstream: r.int(dnsKeys.get('max_pending_upstream'), 'dns.max_pending_upstream', 4096, 1, 1_000_000),
      maxTcpConnections: r.int(dnsKeys.get('max_tcp_connections'), 'dns.max_tcp_connections', 512, 1, 1_000_000),
      tcpIdleTimeoutMs: r.int(dnsKeys.get('tcp_idle_timeout_ms'), 'dns.tcp_idle_timeout_ms', 10_000, 100, 600_000),
      cache: {
        maxEntries: r.int(cacheKeys.get('max_entries'), 'dns.cache.max_entries', 100_000, 0, 100_000_000),
        maxBytes: r.int(cacheKeys.get('max_bytes'), 'dns.cache.max_bytes', 32 * 1024 * 1024, 0, 2 ** 40),
        minTtl: r.int(cacheKeys.get('min_ttl'), 'dns.cache.min_ttl', 0, 0, 86_400),
        maxTtl: r.int(cacheKeys.get('max_ttl'), 'dns.cache.max_ttl', 86_400, 0, 7 * 86_400),
        negativeMaxTtl: r.int(cacheKeys.get('negative_max_ttl'), 'dns.cache.negative_max_ttl', 3600, 0, 86_400),
      },
      rateLimit: {
        qps: r.int(rateKeys.get('qps'), 'dns.rate_limit.qps', 200, 0, 10_000_000),
        burst: r.int(rateKeys.get('burst'), 'dns.rate_limit.burst', 1000, 1, 10_000_000),
      },
    },
    sni: {
      listen: hostPorts(r, sniKeys.get('listen'), 'sni.listen', ['127.0.0.1:8443']),
      upstreamPort: r.int(sniKeys.get('upstream_port'), 'sni.upstream_port', 443, 1, 65535),
      onBlock: r.oneOf(sniKeys.get('on_block'), 'sni.on_block', ['reset', 'alert'], 'reset'),
      allowPrivateDestinations: r.bool(sniKeys.get('allow_private_destinations'), 'sni.allow_private_destinations', false),
      maxClientHelloBytes: r.int(sniKeys.get('max_client_hello_bytes'), 'sni.max_client_hello_bytes', 16_384, 512, 65_536),
      handshakeTimeoutMs: r.int(sniKeys.get('handshake_timeout_ms'), 'sni.handshake_timeout_ms', 10_000, 100, 300_000),
      connectTimeoutMs: r.int(sniKeys.get('connect_timeout_ms'), 'sni.connect_timeout_ms', 5_000, 100, 120_000),
      idleTimeoutMs: r.int(sniKeys.get('idle_timeout_ms'), 'sni.idle_timeout_ms', 0, 0, 86_400_000),
      maxConnections: r.int(sniKeys.get('max_connections'), 'sni.max_connections', 16_384, 1, 1_000_000),
      shutdownGraceMs: r.int(sniKeys.get('shutdown_grace_ms'), 'sni.shutdown_grace_ms', 5_000, 0, 600_000),
    },
    metrics: {
      listen: metricsListen === undefined ? (parseHostPort('127.0.0.1:9153') as HostPort) : optionalHostPort(r, metricsListen, 'metrics.listen'),
      blockedNamesMax: r.int(metricsKeys.get('blocked_names_max'), 'metrics.blocked_names_max', 1000, 0, 1_000_000),
    },
    firewall: {
      nftables: {
        enabled: r.bool(nftKeys.get('enabled'), 'firewall.nftables.enabled', false),
        table: tableName(r, nftKeys.get('table')),
        graceSeconds: r.int(nftKeys.get('grace_seconds'), 'firewall.nftables.grace_seconds', 60, 0, 86_400),
      },
    },
    log: { level: r.oneOf(logKeys.get('level'), 'log.level', LOG_LEVELS, 'info') },
    presets,
    policy,
    mode,
    report,
    reportPorts,
    groups,
  }
  if (config.dns.rateLimit.qps > 0 && config.dns.rateLimit.burst < 1) r.error(rateKeys.get('burst'), 'dns.rate_limit.burst must be at least 1')
  if (r.errors.length > 0) throw new ConfigErrors(inFileOrder(r.errors))
  const warnings = findWarnings(policy).map((w) => `${policy[w.entryIndex]!.source}: warning: ${w.message}`)
  for (const g of groups) {
    for (const w of findWarnings(g.policy)) warnings.push(`${g.policy[w.entryIndex]!.source}: warning: group "${g.name}": ${w.message}`)
  }
  warnings.push(...groupWarnings(config))
  return { config, warnings }
}

/**
 * `groups:` items. Each is independent of the top-level policy (no inheritance: a
 * group's list is exactly what it names, so `check --client` has one place to look).
 */
function groupList(r: YamlReader, node: Node | null | undefined, presetsDir: string, presetCache: Map<string, PolicyEntry[]>): GroupConfig[] {
  const out: GroupConfig[] = []
  const seen = new Map<string, string>()
  r.list(node, 'groups').forEach((item, i) => {
    if (!isMap(item)) {
      r.error(item, `groups items are mappings with a name and clients, e.g. {name: sensors, clients: [10.1.0.0/24], allow: [...]}, not ${describe(item)}`)
      return
    }
    const keys = r.map(item, 'groups[]', GROUP_KEYS)
    const nameNode = keys.get('name')
    let name = r.string(nameNode, 'groups[].name')
    if (nameNode === undefined) r.error(item, `groups item ${i + 1} needs a name`)
    if (name !== null) {
      if (!/^[a-z0-9_-]{1,64}$/.test(name)) {
        r.error(nameNode, `groups[].name "${name}" must be 1-64 of a-z 0-9 _ - (it becomes a metric label)`)
      } else if (name === 'default') {
        r.error(nameNode, 'groups[].name "default" is reserved: the top-level presets/allow/deny are the default group')
      } else if (seen.has(name)) {
        r.error(nameNode, `groups[].name "${name}" is already used at ${seen.get(name)}`)
      } else seen.set(name, r.where(nameNode))
    }
    name ??= `#${i + 1}`
    const path = `groups.${name}`
    if (!keys.has('clients')) r.error(item, `${path} needs clients: [CIDR, …]; clients in no group get the top-level policy`)
    const clients = cidrs(r, keys.get('clients'), `${path}.clients`, [])
    if (keys.has('clients') && clients.length === 0 && r.list(keys.get('clients'), `${path}.clients`).length === 0) {
      r.error(keys.get('clients'), `${path}.clients is empty: the group could never be chosen`)
    }
    const presets = presetNames(r, keys.get('presets'), presetsDir, `${path}.presets`)
    const policy: PolicyEntry[] = []
    for (const p of presets) policy.push(...loadPreset(p, presetsDir, r.errors, presetCache))
    policy.push(...entries(r, keys.get('allow'), `${path}.allow`, 'allow'))
    policy.push(...entries(r, keys.get('deny'), `${path}.deny`, 'deny'))
    out.push({
      name,
      clients,
      presets,
      policy,
      mode: r.oneOf(keys.get('mode'), `${path}.mode`, MODES, 'enforce'),
      report: entries(r, keys.get('report'), `${path}.report`, 'allow'),
      reportPorts: keys.has('report_ports') ? portList(r, keys.get('report_ports'), `${path}.report_ports`) : DEFAULT_REPORT_PORTS,
      source: r.where(item),
    })
  })
  return out
}

/** One address, or null (`listen: null` / `""`) to turn the listener off. */
/** Errors are collected section by section; operators read them top to bottom. */
function inFileOrder(errors: ConfigError[]): ConfigError[] {
  return [...errors].sort((a, b) => (a.file === b.file ? a.line - b.line || a.col - b.col : 0))
}

function optionalHostPort(r: YamlReader, node: Node | null, path: string): HostPort | null {
  if (node === null || (isScalar(node) && (node.value === null || node.value === ''))) return null
  const text = r.string(node, path)
  if (text === null) return null
  const hp = parseHostPort(text)
  if (typeof hp !== 'string') return hp
  r.error(node, `${path}: ${hp}`)
  return null
}

function hostPorts(r: YamlReader, node: Node | null | undefined, path: string, fallback: readonly string[]): HostPort[] {
  if (node === undefined) return fallback.map((t) => parseHostPort(t) as HostPort)
  const out: HostPort[] = []
  for (const item of r.list(node, path)) {
    const text = r.string(item, path)
    if (text === null) continue
    const hp = parseHostPort(text)
    if (typeof hp === 'string') r.error(item, `${path}: ${hp}`)
    else out.push(hp)
  }
  return out
}

function cidrs(r: YamlReader, node: Node | null | undefined, path: string, fallback: readonly string[]): Cidr[] {
  if (node === undefined) return fallback.map((t) => parseCidr(t) as Cidr)
  const out: Cidr[] = []
  for (const item of r.list(node, path)) {
    const text = r.string(item, path)
    if (text === null) continue
    const c = parseCidr(text)
    if (typeof c === 'string') r.error(item, `${path}: ${c}`)
    else out.push(c)
  }
  return out
}

function tableName(r: YamlReader, node: Node | null | undefined): string {
  const name = r.string(node, 'firewall.nftables.table') ?? 'egressd'
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(name)) {
    r.error(node, `firewall.nftables.table "${name}" must be a letter then letters, digits or _ (at most 32)`)
  }
  return name
}

export function knownPresets(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -5)).sort()
  } catch {
    return []
  }
}

function presetNames(r: YamlReader, node: Node | null | undefined, dir: string, path = 'presets'): string[] {
  const known = knownPresets(dir)
  const out: string[] = []
  for (const item of r.list(node, path)) {
    const name = r.string(item, path)
    if (name === null) continue
    if (!known.includes(name)) {
      const hint = didYouMean(name, known)
      r.error(item, `unknown preset "${name}"${hint ? `; did you mean "${hint}"?` : ''}; known presets: ${known.join(', ') || '(none found in ' + dir + ')'}`)
    }
    else out.push(name)
  }
  return out
}

/** A preset file has the shape `{description, source, allow: [...]}`; errors point into it. */
function loadPreset(name: string, dir: string, errors: ConfigError[], cache: Map<string, PolicyEntry[]>): PolicyEntry[] {
  const cached = cache.get(name)
  if (cached !== undefined) return cached
  const file = join(dir, `${name}.yaml`)
  const pr = new YamlReader(file, readFileSync(file, 'utf8'))
  const keys = pr.map(pr.root, '', ['description', 'source', 'allow', 'deny'])
  const list = [
    ...entries(pr, keys.get('allow'), 'allow', 'allow', `preset ${name}`),
    ...entries(pr, keys.get('deny'), 'deny', 'deny', `preset ${name}`),
  ]
  errors.push(...pr.errors)
  cache.set(name, list)
  return list
}

/** allow/deny items: `"name"` or `{name: "…", ports: [123/udp]}`; patterns checked here so errors carry a position. */
function entries(r: YamlReader, node: Node | null | undefined, path: string, action: Action, origin?: string): PolicyEntry[] {
  const out: PolicyEntry[] = []
  for (const item of r.list(node, path)) {
    let nameNode: Node | null | undefined = item
    let ports: readonly PortSpec[] = DEFAULT_PORTS
    if (isMap(item)) {
      const keys = r.map(item, `${path}[]`, ['name', 'ports'])
      nameNode = keys.get('name')
      if (nameNode === undefined) r.error(item, `${path} entry needs a name, e.g. {name: "*.example.com", ports: [443/tcp]}`)
      if (keys.has('ports')) ports = portList(r, keys.get('ports'), `${path}[].ports`)
    }
    if (nameNode === undefined) continue
    const text = isScalar(nameNode) && (typeof nameNode.value === 'string' || typeof nameNode.value === 'number') ? String(nameNode.value) : null
    if (text === null) {
      r.error(nameNode, `${path} entries are names or {name, ports} mappings, not ${describe(nameNode)}`)
      continue
    }
    try {
      expandPattern(text)
    } catch (e) {
      if (!(e instanceof PatternError)) throw e
      const quoted = (nameNode as Scalar).type === Scalar.QUOTE_DOUBLE || (nameNode as Scalar).type === Scalar.QUOTE_SINGLE
      r.error(nameNode, `${path}: "${text}": ${e.message}${e.hint ? ` (${e.hint})` : ''}`, e.offset + (quoted ? 1 : 0))
      continue
    }
    const where = r.where(nameNode)
    out.push({ action, entry: text, ports, source: origin ? `${origin} (${basename(r.file)}:${where.slice(r.file.length + 1)})` : where })
  }
  return out
}

function portList(r: YamlReader, node: Node | null | undefined, path: string): PortSpec[] {
  const out: PortSpec[] = []
  for (const item of r.list(node, path)) {
    const text = isScalar(item) ? String(item.value) : ''
    const m = /^([0-9]{1,5})\/(tcp|udp)$/.exec(text)
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) {
      r.error(item, `${path}: "${text}" is not a port like 443/tcp or 123/udp`)
      continue
    }
    out.push({ port: Number(m[1]), proto: m[2] as 'tcp' | 'udp' })
  }
  if (out.length === 0 && r.list(node, path).length === 0) r.error(node, `${path} is empty; leave it out for the default [443/tcp]`)
  return out
}
