import { readdirSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMap, isScalar, Scalar, type Node } from 'yaml'
import { ConfigError, ConfigErrors } from '../errors.js'
import { expandPattern, PatternError } from '../policy/pattern.js'
import { findWarnings } from '../policy/compile.js'
import { DEFAULT_PORTS, type Action, type PolicyEntry, type PortSpec } from '../policy/types.js'
import { didYouMean } from './did-you-mean.js'
import { readField, readPorts, readSection, type PolicyReaders } from './fields.js'
import { readResolvConf } from './resolv-conf.js'
import { DEFAULT_GROUP, groupWarnings } from './groups.js'
import { configSchema, type groupSchema } from './schema.js'
import type { Cidr, Config, GroupConfig, GroupMode } from './types.js'
import { describe, quote, YamlReader } from './yaml-reader.js'

/** Shipped next to dist/ and src/: both are two levels below the package root. */
export const PRESETS_DIR = fileURLToPath(new URL('../../config/presets/', import.meta.url))

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
  const presetsDir = options.presetsDir ?? PRESETS_DIR
  // Preset files are read once per configuration even when several groups name them.
  const presetCache = new Map<string, PolicyEntry[]>()
  const readers: LoaderReaders = {
    entries: (node, path, action) => entries(r, node, path, action),
    presets: (node, path) => presetNames(r, node, presetsDir, path),
    groups: (node, path, field) => groupList(r, node, path, field.item as typeof groupSchema, readers),
    loadPresets: (names) => {
      const out: PolicyEntry[] = []
      for (const name of names) out.push(...loadPreset(name, presetsDir, r.errors, presetCache))
      return out
    },
  }
  const top = readSection(r, r.root, '', configSchema.fields, readers)
  const policy = [...readers.loadPresets(top.presets), ...top.allow, ...top.deny]
  const config: Config = {
    file,
    // `upstreams: []` (the default) means the nameservers of /etc/resolv.conf.
    dns: top.dns.upstreams.length > 0 ? top.dns : { ...top.dns, upstreams: readResolvConf(options.resolvConf) },
    sni: top.sni,
    metrics: top.metrics,
    firewall: top.firewall,
    log: top.log,
    presets: top.presets,
    policy,
    mode: top.mode,
    report: top.report,
    reportPorts: top.reportPorts,
    groups: top.groups,
  }
  if (r.errors.length > 0) throw new ConfigErrors(inFileOrder(r.errors))
  const warnings = findWarnings(policy).map((w) => `${policy[w.entryIndex]!.source}: warning: ${w.message}`)
  for (const g of config.groups!) {
    for (const w of findWarnings(g.policy)) warnings.push(`${g.policy[w.entryIndex]!.source}: warning: group "${g.name}": ${w.message}`)
  }
  warnings.push(...groupWarnings(config))
  return { config, warnings }
}

interface LoaderReaders extends PolicyReaders {
  /** Every entry of the named presets, in order; each file read once. */
  loadPresets(names: readonly string[]): PolicyEntry[]
}

/**
 * `groups:` items. Each is independent of the top-level policy (no inheritance: a
 * group's list is exactly what it names, so `check --client` has one place to look).
 * Keys, defaults and the name rule come from `groupSchema`; the path in messages is
 * `groups[]` until the name is known, `groups.NAME` after.
 */
function groupList(r: YamlReader, node: Node | null | undefined, list: string, item: typeof groupSchema, readers: LoaderReaders): GroupConfig[] {
  const out: GroupConfig[] = []
  const seen = new Map<string, string>()
  r.list(node, list).forEach((itemNode, i) => {
    if (!isMap(itemNode)) {
      r.error(itemNode, `${list} items are mappings with a name and clients, e.g. {name: sensors, clients: [10.1.0.0/24], allow: [...]}, not ${describe(itemNode)}`)
      return
    }
    const keys = r.map(itemNode, `${list}[]`, Object.keys(item))
    const nameNode = keys.get('name')
    let name = r.string(nameNode, `${list}[].name`)
    if (nameNode === undefined) r.error(itemNode, `${list} item ${i + 1} needs a name`)
    if (name !== null) {
      if (!item.name.pattern.test(name)) {
        r.error(nameNode, `${list}[].name ${quote(name)} must be ${item.name.rule} (it becomes a metric label)`)
      } else if (name === DEFAULT_GROUP) {
        r.error(nameNode, `${list}[].name "${DEFAULT_GROUP}" is reserved: the top-level presets/allow/deny are the default group`)
      } else if (seen.has(name)) {
        r.error(nameNode, `${list}[].name "${name}" is already used at ${seen.get(name)}`)
      } else seen.set(name, r.where(nameNode))
    }
    name ??= `#${i + 1}`
    const path = `${list}.${name}`
    const field = <K extends keyof typeof item>(key: K) => readField(r, keys.get(key), `${path}.${key}`, item[key], readers)
    if (!keys.has('clients')) r.error(itemNode, `${path} needs clients: [CIDR, …]; clients in no group get the top-level policy`)
    const clients = field('clients') as Cidr[]
    if (keys.has('clients') && clients.length === 0 && r.list(keys.get('clients'), `${path}.clients`).length === 0) {
      r.error(keys.get('clients'), `${path}.clients is empty: the group could never be chosen`)
    }
    const presets = field('presets') as string[]
    const policy = [...readers.loadPresets(presets), ...(field('allow') as PolicyEntry[]), ...(field('deny') as PolicyEntry[])]
    out.push({
      name,
      clients,
      presets,
      policy,
      mode: field('mode') as GroupMode,
      report: field('report') as PolicyEntry[],
      reportPorts: field('report_ports') as PortSpec[],
      source: r.where(itemNode),
    })
  })
  return out
}

/** Errors are collected section by section; operators read them top to bottom. */
function inFileOrder(errors: ConfigError[]): ConfigError[] {
  return [...errors].sort((a, b) => (a.file === b.file ? a.line - b.line || a.col - b.col : 0))
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
      if (keys.has('ports')) ports = readPorts(r, keys.get('ports'), `${path}[].ports`)
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
      r.error(nameNode, `${path}: ${quote(text)}: ${e.message}${e.hint ? ` (${e.hint})` : ''}`, e.offset + (quoted ? 1 : 0))
      continue
    }
    const where = r.where(nameNode)
    out.push({ action, entry: text, ports, source: origin ? `${origin} (${basename(r.file)}:${where.slice(r.file.length + 1)})` : where })
  }
  return out
}

