import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isMap, isScalar, isSeq, type Node } from 'yaml'
import { ConfigError, ConfigErrors } from '../errors.js'
import { findWarnings } from '../policy/compile.js'
import { patternSize } from '../policy/pattern.js'
import type { PolicyEntry, PortSpec } from '../policy/types.js'
import { formatHostPort, parseHostPort, type HostPort } from '../net/host-port.js'
import type { Cidr } from '../net/cidr.js'
import { didYouMean } from './did-you-mean.js'
import { MAX_CONFIG_NAMES, NameBudget, readEntries } from './entries.js'
import { isEmptyList, readField, readSection, type IncludedPolicy, type PolicyReaders } from './fields.js'
import { expandInclude, MAX_INCLUDE_FILES } from './glob.js'
import { DEFAULT_MAX_CONFIG_BYTES, maxConfigBytes, MAX_CONFIG_BYTES_ENV, readConfigText } from './read-file.js'
import { readCaFile } from './ca-file.js'
import { readResolvConf } from './resolv-conf.js'
import { hostAddresses, isOwnListener } from './resolver-loop.js'
import { DEFAULT_GROUP, groupWarnings } from './groups.js'
import { configSchema, includeFileSchema, presetFileSchema, type groupSchema } from './schema.js'
import { parseUpstream } from './upstream.js'
import type { Config, GroupConfig, GroupMode, UiConfig } from './types.js'
import { describe, quote, YamlReader } from './yaml-reader.js'

export { MAX_CONFIG_NAMES } from './entries.js'
export { MAX_INCLUDE_FILES } from './glob.js'

/** Shipped next to dist/ and src/: both are two levels below the package root. */
export const PRESETS_DIR = fileURLToPath(new URL('../../config/presets/', import.meta.url))
/** Where an operator's own presets live; a file here wins over a shipped one of the same name. */
export const LOCAL_PRESETS_DIR = '/etc/egressd/presets'

export interface LoadOptions {
  /** The shipped presets: config/presets by default. */
  presetsDir?: string
  /** Looked up before `presetsDir`: /etc/egressd/presets by default; null: none (tests). */
  localPresetsDir?: string | null
  /** For tests: the file `dns.upstreams: []` falls back to. */
  resolvConf?: string
  /**
   * Largest configuration accepted, in bytes, the file and every file it includes
   * together; EGRESSD_MAX_CONFIG_BYTES or 16 MiB by default (read-file.ts).
   */
  maxBytes?: number
  /** For tests: what all entries may expand to together; MAX_CONFIG_NAMES by default. */
  maxNames?: number
  /** For tests: this host's addresses, for the resolver-loop check; os.networkInterfaces() by default. */
  hostAddresses?: readonly string[]
}

export interface LoadedConfig {
  config: Config
  /** Legal but probably unintended (duplicates, shadowed entries, names that cannot exist, an empty policy): lines for `validate`. */
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
  const loader = new Loader(file, text, options)
  const readers = loader.readers(r, [{ real: realOrResolved(file), shown: file }])
  const top = readSection(r, r.root, '', configSchema.fields, readers)
  const inc = top.include
  const policy = [...readers.loadPresets(top.presets), ...top.allow, ...inc.allow, ...top.deny, ...inc.deny]
  const upstreamsFromResolvConf = top.dns.upstreams.length === 0
  const upstreamCaFile = upstreamCa(r, top.dns.upstreamCaFile, file)
  const config: Config = {
    file,
    // `upstreams: []` (the default) means the nameservers of /etc/resolv.conf.
    dns: { ...top.dns, upstreamCaFile, ...(upstreamsFromResolvConf ? { upstreams: readResolvConf(options.resolvConf) } : {}) },
    sni: top.sni,
    metrics: top.metrics,
    firewall: top.firewall,
    log: top.log,
    presets: top.presets,
    policy,
    mode: top.mode,
    report: [...top.report, ...inc.report],
    reportPorts: top.reportPorts,
    groups: top.groups,
    includes: inc.files,
    hash: loader.hash(),
    ui: uiConfig(r, top.ui, file),
  }
  checkResolverLoop(r, config, upstreamsFromResolvConf ? (options.resolvConf ?? '/etc/resolv.conf') : null, options.hostAddresses)
  if (r.errors.length > 0) throw new ConfigErrors(r.report())
  const warnings = loader.warnings
  for (const w of findWarnings(policy)) warnings.push(`${policy[w.entryIndex]!.source}: warning: ${w.message}`)
  for (const g of config.groups!) {
    for (const w of findWarnings(g.policy)) warnings.push(`${g.policy[w.entryIndex]!.source}: warning: group "${g.name}": ${w.message}`)
  }
  // Only when nothing anywhere can pass: a group (or the top level beside groups) that
  // allows nothing is a deliberate quarantine often enough to stay quiet.
  if (emptyEnforced(policy, config.mode, config.report) && config.groups!.every((g) => emptyEnforced(g.policy, g.mode, g.report))) {
    warnings.push(`${file}: warning: ${EMPTY_POLICY}`)
  }
  for (const w of groupWarnings(config)) warnings.push(w)
  return { config, warnings }
}

const EMPTY_POLICY = '0 rules: every name is blocked (no preset, allow, report or included entry anywhere; mode: report lets names through while you build the list)'

/** Enforcing with no allow and no report entry: nothing can ever pass. */
function emptyEnforced(policy: readonly PolicyEntry[], mode: GroupMode | undefined, report: readonly PolicyEntry[] | undefined): boolean {
  return (mode ?? 'enforce') === 'enforce' && (report?.length ?? 0) === 0 && !policy.some((e) => e.action === 'allow')
}

/**
 * An upstream that is one of egressd's own DNS listeners (resolver-loop.ts). Reported at
 * the upstream item, or, when the upstreams came from resolv.conf, at the listener.
 */
function checkResolverLoop(r: YamlReader, config: Config, resolvConf: string | null, given: readonly string[] | undefined): void {
  const { listen, upstreams } = config.dns
  if (listen.length === 0 || upstreams.length === 0) return
  let local: ReadonlySet<string> | null = null
  const own = (u: HostPort): HostPort | undefined => {
    local ??= given !== undefined ? new Set(given) : hostAddresses()
    return listen.find((l) => isOwnListener(u, l, local!))
  }
  const dns = childMap(r.root, 'dns')
  const listenNodes = childSeq(dns, 'listen')
  const nodeOfListen = (l: HostPort) => listenNodes.find((n) => isHostPort(n, l)) ?? childKey(dns, 'listen') ?? childKey(r.root, 'dns') ?? r.root
  const why = (u: HostPort, l: HostPort) => (u.host === l.host ? '' : ` (${u.host} is an address of this host)`)
  const tail = 'every query egressd forwards would come back to it: a resolver loop'
  if (resolvConf === null) {
    for (const n of childSeq(dns, 'upstreams')) {
      // Read again, silently: readField has reported what does not parse.
      const text = isScalar(n) && typeof n.value === 'string' ? n.value : null
      const u = text === null ? null : parseUpstream(text)
      if (u === null || typeof u === 'string') continue
      const l = own(u)
      // An encrypted upstream there never loops (the listener speaks plain DNS) but can never answer either.
      const end = u.transport === undefined ? tail : `it speaks plain DNS, not ${u.transport === 'tls' ? 'DNS over TLS' : 'DNS over HTTPS'}, so every try would fail`
      if (l !== undefined) r.error(n, `dns.upstreams: ${quote(text!)} is egressd's own listener dns.listen "${formatHostPort(l)}"${why(u, l)}; ${end}; name the resolver egressd should ask`)
      // The SNI proxy would resolve the upstream's name through egressd itself: a loop.
      const s = u.transport === undefined ? undefined : config.sni.listen.find((x) => isOwnListener(u, x, (local ??= given !== undefined ? new Set(given) : hostAddresses())))
      if (s !== undefined) r.error(n, `dns.upstreams: ${quote(text!)} is egressd's own SNI listener sni.listen "${formatHostPort(s)}"${why(u, s)}; the proxy would look the resolver's name up through egressd itself: a resolver loop; name the resolver egressd should ask`)
    }
    return
  }
  for (const u of upstreams) {
    const l = own(u)
    if (l === undefined) continue
    r.error(nodeOfListen(l), `dns.upstreams is not set, so the nameservers of ${resolvConf} are used, and "${formatHostPort(u)}" among them is` +
      ` egressd's own listener dns.listen "${formatHostPort(l)}"${why(u, l)}; ${tail}; set dns.upstreams to the resolver egressd should ask`)
    return
  }
}

function childKey(map: Node | null | undefined, key: string): Node | undefined {
  if (!isMap(map)) return undefined
  const pair = map.items.find((p) => (p.key as { value?: unknown } | null)?.value === key)
  return (pair?.key as Node | undefined) ?? undefined
}
function childMap(map: Node | null | undefined, key: string): Node | null | undefined {
  if (!isMap(map)) return undefined
  return map.items.find((p) => (p.key as { value?: unknown } | null)?.value === key)?.value as Node | null | undefined
}
function childSeq(map: Node | null | undefined, key: string): Node[] {
  const v = childMap(map, key)
  return isSeq(v) ? (v.items as Node[]) : []
}
/** Whether a `dns.listen` item reads as `hp`. */
function isHostPort(n: Node, hp: HostPort): boolean {
  const v = (n as { value?: unknown }).value
  const parsed = typeof v === 'string' ? parseHostPort(v) : null
  return parsed !== null && typeof parsed !== 'string' && parsed.host === hp.host && parsed.port === hp.port
}

function realOrResolved(file: string): string {
  try {
    return realpathSync(file)
  } catch {
    return resolve(file)
  }
}

/** One link of the include chain: the file's real path (loops) and the path as written (messages). */
interface Link {
  readonly real: string
  readonly shown: string
}

interface LoaderReaders extends PolicyReaders {
  /** Every entry of the named presets, in order; each file read once. */
  loadPresets(names: readonly string[]): PolicyEntry[]
}

interface Included extends IncludedPolicy {
  /** Names its entries expand to: charged again when another group includes the file. */
  readonly size: number
}

const NOTHING: IncludedPolicy = { files: [], allow: [], deny: [], report: [] }

/** An included file's top-level key that only the main file has (`dns`, `groups`, `presets`). */
function mainOnly(key: string): string | undefined {
  return key in configSchema.fields
    ? `"${key}" belongs in the main configuration file; an included file holds ${Object.keys(includeFileSchema.fields).join(', ').replace(/, (?=[^,]*$)/, ' and ')}`
    : undefined
}

/**
 * The state of one load: the name budget, the byte budget that the configuration and
 * every preset and included file share, the files read (for the hash), and warnings.
 */
class Loader {
  readonly warnings: string[] = []
  private readonly budget: NameBudget
  private readonly presetDirs: readonly string[]
  private readonly presetCache = new Map<string, { entries: PolicyEntry[]; size: number }>()
  private readonly included = new Map<string, Included>()
  private readonly shadowWarned = new Set<string>()
  /** The configuration file, then the included files and operator presets, in the order read. */
  private readonly read: { file: string; text: string }[]
  private readonly limit: number
  private bytesLeft: number
  private includeCount = 0
  private tooManyReported = false

  constructor(file: string, text: string, options: LoadOptions) {
    this.budget = new NameBudget(options.maxNames ?? MAX_CONFIG_NAMES)
    const local = options.localPresetsDir === undefined ? LOCAL_PRESETS_DIR : options.localPresetsDir
    this.presetDirs = [...(local === null ? [] : [local]), options.presetsDir ?? PRESETS_DIR]
    const limit = options.maxBytes ?? maxConfigBytes()
    this.limit = typeof limit === 'number' ? limit : DEFAULT_MAX_CONFIG_BYTES
    this.bytesLeft = Math.max(0, this.limit - Buffer.byteLength(text))
    this.read = [{ file, text }]
  }

  /**
   * `egressd_config_info{hash}`: sha256 of the file alone when nothing else was read
   * from the operator's files (what `sha256sum egressd.yaml` prints), else of every file
   * read, path and text, in order. Shipped presets are not hashed: the version label
   * identifies them.
   */
  hash(): string {
    const h = createHash('sha256')
    if (this.read.length === 1) h.update(this.read[0]!.text)
    else for (const { file, text } of this.read) h.update(`${file}\0${text.length}\0`).update(text)
    return h.digest('hex').slice(0, 12)
  }

  readers(r: YamlReader, chain: readonly Link[]): LoaderReaders {
    const readers: LoaderReaders = {
      entries: (node, path, action) => readEntries(r, node, path, action, { budget: this.budget, warnings: this.warnings }),
      include: (node, path) => this.include(r, node, path, chain),
      presets: (node, path) => {
        const names = this.presetNames(r, node, path)
        for (const name of names) {
          const p = this.loadPreset(r, name)
          this.budget.charge(p.size, r, node, `${path}: preset "${name}"`)
        }
        return names
      },
      groups: (node, path, field) => groupList(r, node, path, field.item as typeof groupSchema, readers),
      loadPresets: (names) => {
        const out: PolicyEntry[] = []
        for (const name of names) for (const e of this.loadPreset(r, name).entries) out.push(e)
        return out
      },
    }
    return readers
  }

  private presetFile(name: string): string | null {
    for (const dir of this.presetDirs) {
      const file = join(dir, `${name}.yaml`)
      try {
        // Whatever is there is the preset: readBounded refuses a directory or a pipe by
        // name, where skipping it made the preset silently empty.
        statSync(file)
        return file
      } catch {
        // not in this directory
      }
    }
    return null
  }

  private presetNames(r: YamlReader, node: Node | null | undefined, path: string): string[] {
    const known = [...new Set(this.presetDirs.flatMap(knownPresets))].sort()
    const out: string[] = []
    for (const item of r.list(node, path)) {
      const name = r.string(item, path)
      if (name === null) continue
      if (!known.includes(name)) {
        const hint = didYouMean(name, known)
        r.error(item, `unknown preset "${name}"${hint ? `; did you mean "${hint}"?` : ''}; known presets: ${known.join(', ') || '(none found in ' + this.presetDirs.join(' or ') + ')'}`)
        continue
      }
      out.push(name)
      const file = this.presetFile(name)
      if (this.presetDirs.length > 1 && file !== null && file.startsWith(this.presetDirs[0]!) && !this.shadowWarned.has(name) &&
        knownPresets(this.presetDirs[this.presetDirs.length - 1]!).includes(name)) {
        this.shadowWarned.add(name)
        this.warnings.push(`${r.where(item)}: warning: preset "${name}" is read from ${file}, which takes the place of the shipped preset of that name`)
      }
    }
    return out
  }

  /** A preset file has the shape `{description, source, allow, deny}`; errors point into it. */
  private loadPreset(r: YamlReader, name: string): { entries: PolicyEntry[]; size: number } {
    const cached = this.presetCache.get(name)
    if (cached !== undefined) return cached
    const result = { entries: [] as PolicyEntry[], size: 0 }
    this.presetCache.set(name, result)
    const file = this.presetFile(name)
    if (file === null) return result
    let text: string
    try {
      text = this.readBounded(file)
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      r.adoptError(e)
      return result
    }
    const shipped = file.startsWith(this.presetDirs[this.presetDirs.length - 1]!)
    if (!shipped) this.read.push({ file, text })
    const pr = new YamlReader(file, text)
    const preset = readSection(pr, pr.root, '', presetFileSchema.fields, {
      entries: (node, path, action) => readEntries(pr, node, path, action, { origin: `preset ${name}`, warnings: this.warnings }),
      // A preset file has no presets, groups or include keys (presetFileSchema).
      presets: () => [],
      groups: () => [],
      include: () => NOTHING,
    })
    result.entries = [...preset.allow, ...preset.deny]
    for (const e of result.entries) result.size += patternSize(e.entry)
    r.adopt(pr)
    return result
  }

  /** The file's text within what is left of the byte budget; ConfigError at file:1:1 otherwise. */
  private readBounded(file: string): string {
    let size = -1
    try {
      const st = statSync(file)
      if (st.isDirectory()) throw new ConfigError(file, 1, 1, 'is a directory')
      // Refused before the open: a named pipe with no writer blocks open() for ever, a
      // terminal blocks the read (the main file may be a pipe: `-c <(…)` has a writer).
      const odd = st.isFIFO() ? 'a named pipe' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : st.isSocket() ? 'a socket' : null
      if (odd !== null) throw new ConfigError(file, 1, 1, `is ${odd}, not a file`)
      if (st.isFile()) size = st.size
    } catch (e) {
      if (e instanceof ConfigError) throw e
      // readConfigText reports it
    }
    if (size > this.bytesLeft) {
      throw new ConfigError(file, 1, 1, `${size} bytes is more than the ${this.bytesLeft} bytes left of the ${this.limit}-byte limit,` +
        ` which the configuration and every preset and included file share (${MAX_CONFIG_BYTES_ENV} raises it; docs/configuration.md)`)
    }
    const text = readConfigText(file, this.bytesLeft)
    this.bytesLeft -= Buffer.byteLength(text)
    return text
  }

  /** `include:` items of the file `r` reads; `chain` is the files being included, outermost first. */
  private include(r: YamlReader, node: Node | null | undefined, path: string, chain: readonly Link[]): IncludedPolicy {
    const files: string[] = []
    const allow: PolicyEntry[] = []
    const deny: PolicyEntry[] = []
    const report: PolicyEntry[] = []
    for (const item of r.list(node, path)) {
      const pattern = r.string(item, path)
      if (pattern === null) continue
      const match = expandInclude(pattern, dirname(r.file), MAX_INCLUDE_FILES)
      if (typeof match === 'string') {
        r.error(item, `${path}: ${quote(pattern)}: ${match}`)
        continue
      }
      for (const file of match.files) {
        const got = this.includeFile(r, item, path, pattern, file, chain)
        if (got === null) continue
        files.push(...got.files)
        for (const e of got.allow) allow.push(e)
        for (const e of got.deny) deny.push(e)
        for (const e of got.report) report.push(e)
      }
    }
    return { files, allow, deny, report }
  }

  private includeFile(r: YamlReader, item: Node, path: string, pattern: string, file: string, chain: readonly Link[]): Included | null {
    const where = `${path}: ${quote(pattern)}${file !== pattern ? ` (${file})` : ''}`
    let real: string
    try {
      real = realpathSync(file)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      r.error(item, `${where}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`)
      return null
    }
    const loop = chain.findIndex((c) => c.real === real)
    if (loop >= 0) {
      const cycle = [...chain.slice(loop).map((c) => c.shown), file].join(' → ')
      r.error(item, `${where}: include loop: ${cycle}${loop === chain.length - 1 ? ' (the file includes itself)' : ''}`)
      return null
    }
    const cached = this.included.get(real)
    if (cached !== undefined) {
      // Included again (by a group, or through two paths): read once, its names counted again.
      this.budget.charge(cached.size, r, item, where)
      return cached
    }
    if (this.includeCount >= MAX_INCLUDE_FILES) {
      if (!this.tooManyReported) r.error(item, `${where}: more than ${MAX_INCLUDE_FILES} files included in all; later ones were not read`)
      this.tooManyReported = true
      return null
    }
    this.includeCount++
    let text: string
    try {
      text = this.readBounded(file)
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e
      const detail = e.detail === 'is a directory' || e.detail === 'cannot read configuration: it is a directory'
        ? `is a directory; to include the files in it write ${JSON.stringify(join(pattern, '*.yaml'))}`
        : e.detail.replace(/^cannot read configuration: /, 'cannot read: ')
      r.error(item, `${where}: ${detail}`)
      return null
    }
    this.read.push({ file, text })
    const ir = new YamlReader(file, text)
    const before = this.budget.used
    const lists = readSection(ir, ir.root, '', includeFileSchema.fields, this.readers(ir, [...chain, { real, shown: file }]), mainOnly)
    r.adopt(ir)
    const got: Included = {
      files: [file, ...lists.include.files],
      allow: [...lists.allow, ...lists.include.allow],
      deny: [...lists.deny, ...lists.include.deny],
      report: [...lists.report, ...lists.include.report],
      size: this.budget.used - before,
    }
    this.included.set(real, got)
    return got
  }
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
    const allow = field('allow') as PolicyEntry[]
    const deny = field('deny') as PolicyEntry[]
    const report = field('report') as PolicyEntry[]
    const inc = field('include') as IncludedPolicy
    const policy = [...readers.loadPresets(presets), ...allow, ...inc.allow, ...deny, ...inc.deny]
    out.push({
      name,
      clients,
      presets,
      policy,
      mode: field('mode') as GroupMode,
      report: [...report, ...inc.report],
      reportPorts: field('report_ports') as PortSpec[],
      source: r.where(itemNode),
    })
  })
  return out
}

/**
 * `dns.upstream_ca_file`, made absolute (relative to the configuration file) and read
 * once here so a missing or broken bundle is reported at its line.
 */
function upstreamCa(r: YamlReader, caFile: string, file: string): string {
  if (caFile === '') return ''
  const path = isAbsolute(caFile) ? caFile : join(dirname(file), caFile)
  const certs = readCaFile(path)
  if (typeof certs === 'string') {
    const node = isMap(r.root) ? (r.root.getIn(['dns', 'upstream_ca_file'], true) as Node | null) : null
    r.error(node, `dns.upstream_ca_file: ${certs}`)
  }
  return path
}

/** Shortest token accepted from `ui.token_file`: 16 characters (128 bits as hex). */
const MIN_TOKEN = 16

/**
 * `ui:` (the status page, src/ui). The token file is read here, so `validate` and a
 * reload report an unreadable or short token at its line; only its sha256 is kept.
 */
function uiConfig(r: YamlReader, ui: { enabled: boolean; tokenFile: string; eventsMax: number; clientsMax: number }, file: string): UiConfig {
  let tokenSha256: string | null = null
  const tokenFile = ui.tokenFile === '' ? null : ui.tokenFile
  if (tokenFile !== null) {
    const node = isMap(r.root) ? (r.root.getIn(['ui', 'token_file'], true) as Node | null) : null
    const path = isAbsolute(tokenFile) ? tokenFile : join(dirname(file), tokenFile)
    try {
      const token = readFileSync(path, 'utf8').trim()
      if (token.length < MIN_TOKEN) r.error(node, `ui.token_file ${path} holds ${token.length} characters; a token needs at least ${MIN_TOKEN} (e.g. openssl rand -hex 32)`)
      else tokenSha256 = createHash('sha256').update(token).digest('hex')
    } catch (e) {
      r.error(node, `ui.token_file: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
    }
  }
  return { enabled: ui.enabled, tokenFile, tokenSha256, eventsMax: ui.eventsMax, clientsMax: ui.clientsMax }
}

export function knownPresets(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -5)).sort()
  } catch {
    return []
  }
}
