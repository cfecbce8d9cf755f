import { readdirSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMap, isScalar, Scalar, type Node } from 'yaml'
import { ConfigError, ConfigErrors } from '../errors.js'
import { expandPattern, MAX_EXPANSION, PatternError, patternSize } from '../policy/pattern.js'
import { findWarnings } from '../policy/compile.js'
import { DEFAULT_PORTS, type Action, type PolicyEntry, type PortSpec } from '../policy/types.js'
import { didYouMean } from './did-you-mean.js'
import { isEmptyList, readField, readPorts, readSection, type PolicyReaders } from './fields.js'
import { maxConfigBytes, readConfigText } from './read-file.js'
import { readResolvConf } from './resolv-conf.js'
import { DEFAULT_GROUP, groupWarnings } from './groups.js'
import { configSchema, presetFileSchema, type groupSchema } from './schema.js'
import type { Cidr } from '../net/cidr.js'
import type { Config, GroupConfig, GroupMode } from './types.js'
import { describe, quote, YamlReader } from './yaml-reader.js'

/** Shipped next to dist/ and src/: both are two levels below the package root. */
export const PRESETS_DIR = fileURLToPath(new URL('../../config/presets/', import.meta.url))

export interface LoadOptions {
  /** Where `presets:` names are looked up; the shipped config/presets by default. */
  presetsDir?: string
  /** For tests: the file `dns.upstreams: []` falls back to. */
  resolvConf?: string
  /** Largest file accepted, in bytes; EGRESSD_MAX_CONFIG_BYTES or 16 MiB by default (read-file.ts). */
  maxBytes?: number
  /** For tests: what all entries may expand to together; MAX_CONFIG_NAMES by default. */
  maxNames?: number
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
    const limit = options.maxBytes ?? maxConfigBytes()
    if (typeof limit === 'string') throw new ConfigError(file, 1, 1, limit)
    text = readConfigText(file, limit)
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigErrors([e])
    throw e
  }
  return parseConfig(file, text, options)
}

export function parseConfig(file: string, text: string, options: LoadOptions = {}): LoadedConfig {
  const r = new YamlReader(file, text)
  if (r.errors.length > 0) throw new ConfigErrors(r.report())
  const presetsDir = options.presetsDir ?? PRESETS_DIR
  // Preset files are read once per configuration even when several groups name them.
  const presetCache = new Map<string, PolicyEntry[]>()
  const budget = new NameBudget(options.maxNames ?? MAX_CONFIG_NAMES)
  const readers: LoaderReaders = {
    entries: (node, path, action) => entries(r, node, path, action, undefined, budget),
    presets: (node, path) => {
      const names = presetNames(r, node, presetsDir, path)
      for (const name of names) {
        let n = 0
        for (const e of loadPreset(name, presetsDir, r.errors, presetCache)) n += patternSize(e.entry)
        budget.charge(n, r, node, `${path}: preset "${name}"`)
      }
      return names
    },
    groups: (node, path, field) => groupList(r, node, path, field.item as typeof groupSchema, readers),
    loadPresets: (names) => {
      const out: PolicyEntry[] = []
      for (const name of names) for (const e of loadPreset(name, presetsDir, r.errors, presetCache)) out.push(e)
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
  if (r.errors.length > 0) throw new ConfigErrors(r.report())
  const warnings = findWarnings(policy).map((w) => `${policy[w.entryIndex]!.source}: warning: ${w.message}`)
  for (const g of config.groups!) {
    for (const w of findWarnings(g.policy)) warnings.push(`${g.policy[w.entryIndex]!.source}: warning: group "${g.name}": ${w.message}`)
  }
  for (const w of groupWarnings(config)) warnings.push(w)
  return { config, warnings }
}

/**
 * What all entries of a configuration may expand to together, counting each name a
 * brace product yields and each group's use of a preset (every group compiles its own
 * matcher). 1 M plain allow entries load; a small file of brace products that would
 * expand to millions of names is refused before they are expanded (measured: 300
 * entries of `{0..99}{0..99}.…`, an 11 KB file, took 24 s and 600 MB to accept as 3 M
 * rules). Documented in docs/configuration.md.
 */
export const MAX_CONFIG_NAMES = 1 << 20

class NameBudget {
  private used = 0
  private exceeded = false
  constructor(readonly max: number) {}

  /** Counts `n` more names; false once the total is past `max` (reported at the first entry past it, once). */
  charge(n: number, r: YamlReader, node: Node | null | undefined, what: string): boolean {
    if (this.exceeded) return false
    if (this.used + n <= this.max) {
      this.used += n
      return true
    }
    this.exceeded = true
    r.error(node, `${what} brings the configuration to more than ${this.max} names (${this.used} before it, ${n} from it;` +
      ' each brace expansion counts its names, each group its own); later entries were not expanded')
    return false
  }
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
    if (keys.has('clients') && isEmptyList(keys.get('clients'))) {
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
  const preset = readSection(pr, pr.root, '', presetFileSchema.fields, {
    entries: (node, path, action) => entries(pr, node, path, action, `preset ${name}`),
    // A preset file has no presets or groups keys (presetFileSchema).
    presets: () => [],
    groups: () => [],
  })
  const list = [...preset.allow, ...preset.deny]
  for (const e of pr.errors) errors.push(e)
  cache.set(name, list)
  return list
}

/** allow/deny items: `"name"` or `{name: "…", ports: [123/udp]}`; patterns checked here so errors carry a position. */
function entries(r: YamlReader, node: Node | null | undefined, path: string, action: Action, origin?: string, budget?: NameBudget): PolicyEntry[] {
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
      // Counted before expanding: an entry past the budget is never expanded. One past
      // MAX_EXPANSION goes on to expandPattern, which refuses it before expanding too.
      const size = patternSize(text)
      if (budget !== undefined && size <= MAX_EXPANSION && !budget.charge(size, r, nameNode, `${path}: ${quote(text)}`)) continue
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

