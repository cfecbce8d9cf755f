/**
 * The vocabulary of the configuration schema: field descriptors (a kind, a default,
 * bounds, a doc string), the type each one yields (`Infer`), and the one reader that
 * turns a YAML node into that value with `file:line:col` errors. `schema.ts` says which
 * keys egressd has; this file says what a key of each kind means.
 */
import { isScalar, isSeq, type Node } from 'yaml'
import type { Action, GroupConfig, PolicyEntry, PortSpec } from '../policy/types.js'
import { parseCidr, type Cidr } from '../net/cidr.js'
import { parseHostPort, type HostPort } from '../net/host-port.js'
import { parseUpstream, type Upstream } from './upstream.js'
import { quote, type YamlReader } from './yaml-reader.js'

/** Phantom: the TypeScript type a field's value has in `Config`; never set at run time. */
declare const valueType: unique symbol
interface Yields<T> {
  readonly [valueType]?: T
  /** One sentence for the configuration reference (docs/configuration.md). */
  readonly doc: string
}

export interface IntField extends Yields<number> {
  readonly kind: 'int'
  readonly default: number
  readonly min: number
  readonly max: number
}
export interface BoolField extends Yields<boolean> {
  readonly kind: 'bool'
  readonly default: boolean
}
export interface EnumField<T extends string = string> extends Yields<T> {
  readonly kind: 'enum'
  readonly choices: readonly T[]
  readonly default: T
}
/** A string that must match `pattern`; `rule` says how, in words, for the error. */
export interface NameField extends Yields<string> {
  readonly kind: 'name'
  readonly default: string
  readonly pattern: RegExp
  readonly rule: string
}
/** Free text (a preset's description). */
export interface TextField extends Yields<string> {
  readonly kind: 'text'
  readonly default: string
}
export interface HostPortsField<T extends HostPort = HostPort> extends Yields<readonly T[]> {
  readonly kind: 'hostports'
  readonly default: readonly string[]
  /** Upstreams: the port a bare address means (53), and scheme forms explained (upstream.ts). Absent: a port is required. */
  readonly defaultPort?: number
}
/** One address; `null` or `""` in the file (or a null default) turns the listener off. */
export interface OptionalHostPortField extends Yields<HostPort | null> {
  readonly kind: 'hostport?'
  readonly default: string | null
}
export interface CidrsField extends Yields<readonly Cidr[]> {
  readonly kind: 'cidrs'
  readonly default: readonly string[]
}
export interface PortsField extends Yields<readonly PortSpec[]> {
  readonly kind: 'ports'
  readonly default: readonly PortSpec[]
}
/** allow/deny/report lists: names or `{name, ports, public_suffix}`, read by the policy loader. */
export interface EntriesField extends Yields<readonly PolicyEntry[]> {
  readonly kind: 'entries'
  readonly action: Action
  /**
   * The keys of an entry written as a mapping, for the reference (`allow[].ports`). Set
   * on one field only so the reference lists them once; every list reads them.
   */
  readonly item?: Schema
}
/** What `include:` brings: the entries of the files it names, each list in file order. */
export interface IncludedPolicy {
  /** Every file read, nested includes included, in the order read. */
  readonly files: readonly string[]
  readonly allow: readonly PolicyEntry[]
  readonly deny: readonly PolicyEntry[]
  readonly report: readonly PolicyEntry[]
}
export interface IncludeField extends Yields<IncludedPolicy> {
  readonly kind: 'include'
}
export interface PresetsField extends Yields<readonly string[]> {
  readonly kind: 'presets'
}
export interface GroupsField extends Yields<readonly GroupConfig[]> {
  readonly kind: 'groups'
  /** The keys of one item; `groups[].name` etc. in messages and the reference. */
  readonly item: Schema
}
export interface SectionField<S extends Schema = Schema> extends Yields<Infer<S>> {
  readonly kind: 'section'
  readonly fields: S
}

export type Field =
  | IntField | BoolField | EnumField | NameField | TextField | HostPortsField | OptionalHostPortField | CidrsField
  | PortsField | EntriesField | IncludeField | PresetsField | GroupsField | SectionField<Schema>

/** Keys as written in YAML (snake_case), in the order the reference lists them. */
export interface Schema {
  readonly [key: string]: Field
}

/** `max_client_hello_bytes` → `maxClientHelloBytes`, at the type level and at run time. */
export type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S
export function camel<S extends string>(key: S): Camel<S> {
  return key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()) as Camel<S>
}

type ValueOf<F> = F extends Yields<infer T> ? Exclude<T, undefined> : never
/** The configuration object a schema yields: camelCase keys, readonly, each of its field's type. */
export type Infer<S extends Schema> = { readonly [K in keyof S & string as Camel<K>]: ValueOf<S[K]> }

// Constructors: they fix the literal types (`enumOf(['a', 'b'], 'a')` yields 'a' | 'b').
export const int = (default_: number, min: number, max: number, doc: string): IntField => ({ kind: 'int', default: default_, min, max, doc })
export const bool = (default_: boolean, doc: string): BoolField => ({ kind: 'bool', default: default_, doc })
export const enumOf = <const T extends string>(choices: readonly T[], default_: NoInfer<T>, doc: string): EnumField<T> =>
  ({ kind: 'enum', choices, default: default_, doc })
export const name = (default_: string, pattern: RegExp, rule: string, doc: string): NameField => ({ kind: 'name', default: default_, pattern, rule, doc })
export const text = (default_: string, doc: string): TextField => ({ kind: 'text', default: default_, doc })
export const hostPorts = (default_: readonly string[], doc: string): HostPortsField => ({ kind: 'hostports', default: default_, doc })
export const upstreams = (default_: readonly string[], doc: string): HostPortsField<Upstream> => ({ kind: 'hostports', default: default_, defaultPort: 53, doc })
export const optionalHostPort = (default_: string | null, doc: string): OptionalHostPortField => ({ kind: 'hostport?', default: default_, doc })
export const cidrs = (default_: readonly string[], doc: string): CidrsField => ({ kind: 'cidrs', default: default_, doc })
export const ports = (default_: readonly PortSpec[], doc: string): PortsField => ({ kind: 'ports', default: default_, doc })
export const entries = (action: Action, doc: string, item?: Schema): EntriesField => ({ kind: 'entries', action, doc, ...(item ? { item } : {}) })
export const include = (doc: string): IncludeField => ({ kind: 'include', doc })
export const presets = (doc: string): PresetsField => ({ kind: 'presets', doc })
export const groups = (item: Schema, doc: string): GroupsField => ({ kind: 'groups', item, doc })
export const section = <const S extends Schema>(fields: S, doc = ''): SectionField<S> => ({ kind: 'section', fields, doc })

/** The kinds whose reading needs the policy loader (pattern checks, preset files, groups). */
export interface PolicyReaders {
  entries(node: Node | null | undefined, path: string, action: Action): PolicyEntry[]
  include(node: Node | null | undefined, path: string): IncludedPolicy
  presets(node: Node | null | undefined, path: string): string[]
  groups(node: Node | null | undefined, path: string, field: GroupsField): GroupConfig[]
}

/**
 * Reads a mapping by its schema: unknown keys are errors with a hint (`misplaced`, else
 * the nearest known key), absent keys take the default.
 */
export function readSection<S extends Schema>(r: YamlReader, node: Node | null | undefined, path: string, schema: S, policy: PolicyReaders,
  misplaced?: (key: string) => string | undefined): Infer<S> {
  const keys = r.map(node, path, Object.keys(schema), misplaced)
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(schema)) {
    out[camel(key)] = readField(r, keys.get(key), path ? `${path}.${key}` : key, field, policy)
  }
  return out as Infer<S>
}

/** `node` is undefined when the key is absent, null when it is present with no value. */
export function readField(r: YamlReader, node: Node | null | undefined, path: string, f: Field, policy: PolicyReaders): unknown {
  switch (f.kind) {
    case 'int':
      return r.int(node, path, f.default, f.min, f.max)
    case 'bool':
      return r.bool(node, path, f.default)
    case 'enum':
      return r.oneOf(node, path, f.choices, f.default)
    case 'name': {
      const value = r.string(node, path) ?? f.default
      if (!f.pattern.test(value)) r.error(node, `${path} ${quote(value)} must be ${f.rule}`)
      return value
    }
    case 'text':
      return r.string(node, path) ?? f.default
    case 'hostports': {
      const parse = f.defaultPort === undefined ? parseHostPort : (t: string) => parseUpstream(t, f.defaultPort)
      return node === undefined ? f.default.map((t) => parse(t) as HostPort) : readList(r, node, path, parse)
    }
    case 'hostport?':
      if (node === undefined) return f.default === null ? null : (parseHostPort(f.default) as HostPort)
      return readOptionalHostPort(r, node, path)
    case 'cidrs':
      return node === undefined ? f.default.map((t) => parseCidr(t) as Cidr) : readList(r, node, path, parseCidr)
    case 'ports':
      return node === undefined ? f.default : readPorts(r, node, path)
    case 'entries':
      return policy.entries(node, path, f.action)
    case 'include':
      return policy.include(node, path)
    case 'presets':
      return policy.presets(node, path)
    case 'groups':
      return policy.groups(node, path, f)
    case 'section':
      return readSection(r, node, path, f.fields, policy)
  }
}

/** A list of strings each parsed by `parse`, which returns the value or an error message. */
function readList<T>(r: YamlReader, node: Node | null, path: string, parse: (text: string) => T | string): T[] {
  const out: T[] = []
  for (const item of r.list(node, path)) {
    const text = r.string(item, path)
    if (text === null) continue
    const v = parse(text)
    // net.ts quotes the whole text; a long scalar is shown shortened (quote()).
    if (typeof v === 'string') r.error(item, `${path}: ${v.replaceAll(`"${text}"`, quote(text))}`)
    else out.push(v)
  }
  return out
}

function readOptionalHostPort(r: YamlReader, node: Node | null, path: string): HostPort | null {
  if (node === null || (isScalar(node) && (node.value === null || node.value === ''))) return null
  const text = r.string(node, path)
  if (text === null) return null
  const hp = parseHostPort(text)
  if (typeof hp !== 'string') return hp
  r.error(node, `${path}: ${hp.replaceAll(`"${text}"`, quote(text))}`)
  return null
}

/** `[443/tcp, 123/udp]`; an empty list is an error (leaving the key out gives the default). */
export function readPorts(r: YamlReader, node: Node | null | undefined, path: string): PortSpec[] {
  const out: PortSpec[] = []
  const items = r.list(node, path)
  for (const item of items) {
    const text = isScalar(item) ? String(item.value) : ''
    const m = /^([0-9]{1,5})\/(tcp|udp)$/.exec(text)
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) {
      r.error(item, `${path}: ${quote(text)} is not a port like 443/tcp or 123/udp`)
      continue
    }
    out.push({ port: Number(m[1]), proto: m[2] as 'tcp' | 'udp' })
  }
  if (isEmptyList(node)) r.error(node, `${path} is empty; leave it out for the default [443/tcp]`)
  return out
}

/** `key: []` or `key:` with nothing; not a scalar or mapping, which `list` already reported. */
export function isEmptyList(node: Node | null | undefined): boolean {
  return node === null || (isSeq(node) && node.items.length === 0)
}
