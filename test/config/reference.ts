/**
 * The configuration reference table of docs/configuration.md, rendered from the schema.
 * schema.test.ts compares it with the file; `UPDATE_DOCS=1 npx tap
 * test/config/schema.test.ts` rewrites the table after a key changes.
 */
import type { Field, Schema } from '../../src/config/fields.js'
import { formatPort } from '../../src/policy/types.js'

export const BEGIN = '<!-- reference:begin (generated from src/config/schema.ts) -->'
export const END = '<!-- reference:end -->'

export interface Row {
  readonly key: string
  readonly default: string
  readonly allowed: string
  readonly doc: string
}

export function rows(schema: Schema, prefix = ''): Row[] {
  const out: Row[] = []
  for (const [key, f] of Object.entries(schema)) {
    const path = prefix + key
    if (f.kind === 'section') {
      out.push(...rows(f.fields, `${path}.`))
      continue
    }
    out.push({ key: path, default: defaultText(f), allowed: allowedText(f), doc: f.doc })
    if ((f.kind === 'groups' || f.kind === 'entries') && f.item !== undefined) out.push(...rows(f.item, `${path}[].`))
  }
  return out
}

export function defaultText(f: Field): string {
  switch (f.kind) {
    case 'int':
    case 'bool':
      return String(f.default)
    case 'enum':
      return f.default
    case 'name':
      return f.default === '' ? '(required)' : f.default
    case 'text':
      return `"${f.default}"`
    case 'hostports':
      return `[${f.default.map((t) => `"${t}"`).join(', ')}]`
    case 'hostport?':
      return f.default === null ? 'null' : `"${f.default}"`
    case 'cidrs':
      return `[${f.default.join(', ')}]`
    case 'ports':
      return `[${f.default.map(formatPort).join(', ')}]`
    case 'entries':
    case 'include':
    case 'presets':
    case 'groups':
    case 'section':
      return '[]'
  }
}

function allowedText(f: Field): string {
  switch (f.kind) {
    case 'int':
      return `whole number ${f.min} to ${f.max}`
    case 'bool':
      return 'true, false'
    case 'enum':
      return f.choices.join(', ')
    case 'name':
      return f.rule
    case 'text':
      return 'text'
    case 'hostports':
      return f.defaultPort === undefined ? 'list of ip:port' : `list of ip or ip:port (port ${f.defaultPort} when left out)`
    case 'hostport?':
      return 'ip:port or null'
    case 'cidrs':
      return 'list of CIDRs'
    case 'ports':
      return 'list of N/tcp, N/udp'
    case 'entries':
      return 'list of patterns or {name, ports, public_suffix}'
    case 'include':
      return 'list of files or globs'
    case 'presets':
      return 'list of preset names'
    case 'groups':
      return 'list of mappings'
    case 'section':
      return ''
  }
}

const cell = (s: string) => s.replaceAll('|', '\\|')

export function table(schema: Schema): string {
  const lines = ['| key | default | allowed | meaning |', '|---|---|---|---|']
  for (const r of rows(schema)) lines.push(`| \`${r.key}\` | \`${cell(r.default)}\` | ${cell(r.allowed)} | ${cell(r.doc)} |`)
  return lines.join('\n')
}
