/**
 * Parsing one policy entry as written in configuration: `*.Example.com.`,
 * `{0..3}.resinio.pool.ntp.org`, `time{1,2,3,4}.google.com`, `bücher.de`.
 * Pure: no I/O. Errors carry the 0-based offset into the text as written, so the
 * configuration loader can report `file:line:col`.
 */
import { domainToASCII } from 'node:url'
import { EgressdError } from '../errors.js'

export class PatternError extends EgressdError {
  constructor(
    message: string,
    /** 0-based index into the pattern text where the problem is. */
    readonly offset: number,
    readonly hint?: string,
    /** Set by `compilePolicy`: which entry of its input was bad. */
    readonly entryIndex?: number,
  ) {
    super('EPATTERN', message)
  }
}

export interface ExpandedPattern {
  /** `*.example.com`: `names` then holds the suffixes (`example.com`). */
  readonly wildcard: boolean
  /** Normalized: lowercase, punycode, no trailing dot. Duplicates are kept (findWarnings reports them). */
  readonly names: readonly string[]
}

/** One entry expands to at most this many names (docs/design.md, policy semantics). */
export const MAX_EXPANSION = 10_000
export const MAX_LABEL = 63
export const MAX_NAME = 253

/** Literal text or one brace group, each knowing where it was written. */
type Segment =
  | { readonly kind: 'text'; readonly text: string; readonly offset: number }
  | { readonly kind: 'list'; readonly items: readonly string[]; readonly offsets: readonly number[] }
  | { readonly kind: 'range'; readonly items: readonly string[]; readonly offset: number }

export function expandPattern(text: string): ExpandedPattern {
  const { wildcard, body, segments, count, firstGroup } = parsePattern(text)
  if (count > MAX_EXPANSION) {
    throw new PatternError(
      `expands to ${count} names, at most ${MAX_EXPANSION}`,
      firstGroup,
      'split it into several entries or use a wildcard',
    )
  }
  const names: string[] = []
  if (segments.length === 1 && segments[0]!.kind === 'text') {
    names.push(normalizeOrThrow(body, segments, []))
    return { wildcard, names }
  }
  // Odometer over the groups: the product in written order, rightmost group fastest, as a shell does.
  const groups = segments.filter((s) => s.kind !== 'text').length
  const pick = new Array<number>(groups).fill(0)
  for (;;) {
    let name = ''
    let g = 0
    for (const s of segments) name += s.kind === 'text' ? s.text : s.items[pick[g++]!]!
    names.push(normalizeOrThrow(name, segments, pick))
    let k = groups - 1
    g = segments.length - 1
    // Advance the odometer from the last group.
    for (; k >= 0; k--) {
      while (segments[g]!.kind === 'text') g--
      const seg = segments[g--] as Exclude<Segment, { kind: 'text' }>
      if (++pick[k]! < seg.items.length) break
      pick[k] = 0
    }
    if (k < 0) break
  }
  return { wildcard, names }
}

/**
 * How many names `expandPattern(text)` yields, computed without expanding (the
 * product of the brace groups' sizes), so a caller can bound the total of many
 * entries before paying for any of them. Throws what expandPattern throws for the
 * text before its expansion.
 */
export function patternSize(text: string): number {
  return parsePattern(text).count
}

interface ParsedPattern {
  readonly wildcard: boolean
  readonly body: string
  readonly segments: readonly Segment[]
  readonly count: number
  /** Offset of the first brace group, where an expansion error points. */
  readonly firstGroup: number
}

function parsePattern(text: string): ParsedPattern {
  if (text.length === 0) throw new PatternError('empty name', 0)
  let body = text
  let bodyOffset = 0
  let wildcard = false
  const star = text.indexOf('*')
  if (star !== -1) {
    if (text === '*' || text === '*.') {
      throw new PatternError('a lone "*" would allow every name', 0, 'name the domain, as in *.example.com')
    }
    if (star === 0 && text.charCodeAt(1) === 0x2e) {
      wildcard = true
      body = text.slice(2)
      bodyOffset = 2
    }
    const bad = body.indexOf('*')
    if (bad !== -1) {
      const at = bad + bodyOffset
      throw new PatternError('"*" may only be the whole leftmost label', at, `did you mean ${starHint(text, at)}?`)
    }
  }
  // One trailing dot is the fully-qualified form of the same name; a second one is an empty label.
  if (body.length > 0 && body.charCodeAt(body.length - 1) === 0x2e) body = body.slice(0, -1)
  if (body.length === 0) throw new PatternError('empty name', text.length === 0 ? 0 : text.length - 1)

  const segments = parseBraces(body, bodyOffset)
  let count = 1
  let firstGroup = -1
  for (const s of segments) {
    if (s.kind === 'text') continue
    if (firstGroup === -1) firstGroup = s.kind === 'list' ? s.offsets[0]! - 1 : s.offset
    count *= s.items.length
  }
  return { wildcard, body, segments, count, firstGroup }
}

function starHint(text: string, at: number): string {
  if (at === 0) return `*.${text.slice(1).replace(/^\.+/, '')}`
  // Whatever stands after the label holding the '*' is the domain the author had in mind.
  const dot = text.indexOf('.', at)
  const rest = dot === -1 ? '' : text.slice(dot + 1)
  return rest === '' ? '*.example.com' : `*.${rest}`
}

function parseBraces(body: string, base: number): Segment[] {
  const out: Segment[] = []
  let litStart = 0
  let i = 0
  while (i < body.length) {
    const c = body.charCodeAt(i)
    if (c === 0x7d /* } */) throw new PatternError('unmatched "}"', base + i, 'braces come in pairs: {a,b} or {0..3}')
    if (c !== 0x7b /* { */) {
      i++
      continue
    }
    if (i > litStart) out.push({ kind: 'text', text: body.slice(litStart, i), offset: base + litStart })
    const open = i
    let close = -1
    for (let j = i + 1; j < body.length; j++) {
      const d = body.charCodeAt(j)
      if (d === 0x7b) throw new PatternError('nested braces are not supported', base + j, 'write the names out, or use several entries')
      if (d === 0x7d) {
        close = j
        break
      }
    }
    if (close === -1) throw new PatternError('unclosed "{"', base + open, 'braces come in pairs: {a,b} or {0..3}')
    out.push(parseGroup(body.slice(open + 1, close), base + open))
    i = litStart = close + 1
  }
  if (litStart < body.length) out.push({ kind: 'text', text: body.slice(litStart), offset: base + litStart })
  return out
}

const RANGE = /^(\d+)\.\.(\d+)$/

function parseGroup(inner: string, open: number): Segment {
  if (inner.length === 0) throw new PatternError('empty braces', open, 'list names as {a,b} or a range as {0..3}')
  const range = RANGE.exec(inner)
  if (range !== null) {
    const [, a, b] = range as unknown as [string, string, string]
    const lo = Number(a)
    const hi = Number(b)
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi)) throw new PatternError('range bound too large', open + 1)
    if (lo > hi) throw new PatternError(`range {${a}..${b}} goes downward`, open + 1, `write {${b}..${a}}`)
    if (hi - lo + 1 > MAX_EXPANSION) {
      throw new PatternError(`expands to ${hi - lo + 1} names, at most ${MAX_EXPANSION}`, open, 'split it into several entries or use a wildcard')
    }
    // Zero-padded bounds pad every number to the wider width, as bash does: {01..10}.
    const pad = (a.length > 1 && a[0] === '0') || (b.length > 1 && b[0] === '0') ? Math.max(a.length, b.length) : 0
    const items: string[] = []
    for (let n = lo; n <= hi; n++) items.push(pad > 0 ? String(n).padStart(pad, '0') : String(n))
    return { kind: 'range', items, offset: open }
  }
  if (inner.includes('..')) {
    throw new PatternError(`"{${inner}}" is not a range`, open + 1, 'a range is {a..b} with whole numbers a ≤ b')
  }
  const items: string[] = []
  const offsets: number[] = []
  let start = 0
  for (;;) {
    const comma = inner.indexOf(',', start)
    const end = comma === -1 ? inner.length : comma
    if (end === start) throw new PatternError('empty item in a brace list', open + 1 + start, 'remove the extra ","')
    items.push(inner.slice(start, end))
    offsets.push(open + 1 + start)
    if (comma === -1) break
    start = comma + 1
  }
  return { kind: 'list', items, offsets }
}

/** Normalized name, or a PatternError located in the text as written. */
function normalizeOrThrow(name: string, segments: readonly Segment[], pick: readonly number[]): string {
  const r = normalizeName(name)
  if (typeof r === 'string') return r
  throw new PatternError(r.message, sourceOffset(r.index, segments, pick), r.hint)
}

/** Maps an index in an expanded name back to the written text. */
function sourceOffset(index: number, segments: readonly Segment[], pick: readonly number[]): number {
  let acc = 0
  let g = 0
  let last = 0
  for (const s of segments) {
    if (s.kind === 'text') {
      if (index < acc + s.text.length) return s.offset + (index - acc)
      acc += s.text.length
      last = s.offset + s.text.length - 1
      continue
    }
    const k = pick[g++]!
    const item = s.items[k]!
    // Inside a range number the brace is the only place worth pointing at.
    const at = s.kind === 'list' ? s.offsets[k]! : s.offset
    if (index < acc + item.length) return s.kind === 'list' ? at + (index - acc) : at
    acc += item.length
    last = s.kind === 'list' ? at + item.length - 1 : at
  }
  return last
}

interface NameProblem {
  readonly index: number
  readonly message: string
  readonly hint?: string
}

/**
 * Lowercase, punycode, checked: `a-z 0-9 - _`, labels 1–63 bytes, name ≤ 253 bytes.
 * Returns the input itself when it is already normal (the common case at 1 M rules).
 */
export function normalizeName(name: string): string | NameProblem {
  let out: string | null = null // built only once a label changes
  let total = 0
  let converted = false
  let labelStart = 0
  for (let i = 0; i <= name.length; i++) {
    if (i < name.length && name.charCodeAt(i) !== 0x2e) continue
    if (i === labelStart) {
      const hint =
        labelStart === 0 ? `a leading dot is not a wildcard here: write *.${name.replace(/^\.+/, '')}` : 'remove the extra "."'
      return { index: Math.max(0, Math.min(labelStart, name.length - 1)), message: 'empty label', hint }
    }
    const r = labelOf(name, labelStart, i)
    if (r !== null && typeof r !== 'string') return r
    const label = r as string | null
    const len = label === null ? i - labelStart : label.length
    const punycoded = label !== null && hasNonAscii(name, labelStart, i)
    if (punycoded) converted = true
    if (len > MAX_LABEL) {
      return { index: labelStart, message: `label is ${len} bytes long${punycoded ? ' after punycode conversion' : ''}, at most ${MAX_LABEL}` }
    }
    if (label !== null && out === null) out = labelStart === 0 ? '' : name.slice(0, labelStart - 1)
    if (out !== null) out += (labelStart === 0 ? '' : '.') + (label ?? name.slice(labelStart, i))
    total += (labelStart === 0 ? 0 : 1) + len
    labelStart = i + 1
  }
  if (total > MAX_NAME) {
    return { index: 0, message: `name is ${total} bytes long${converted ? ' after punycode conversion' : ''}, at most ${MAX_NAME}` }
  }
  return out ?? name
}

function hasNonAscii(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (s.charCodeAt(i) >= 0x80) return true
  return false
}

/**
 * One label: null when it is already normal, the normalized label when it changed,
 * or the problem.
 */
function labelOf(name: string, start: number, end: number): string | null | NameProblem {
  let upper = false
  let nonAscii = -1
  for (let i = start; i < end; i++) {
    const c = name.charCodeAt(i)
    if (c >= 0x80) {
      if (nonAscii === -1) nonAscii = i
      continue
    }
    if (c >= 0x41 && c <= 0x5a) {
      upper = true
      continue
    }
    if (!isLabelByte(c)) return badChar(name, i)
  }
  if (nonAscii === -1) return upper ? name.slice(start, end).toLowerCase() : null
  // WHATWG host parsing treats a last label of digits as IPv4 (`１２３` → `0.0.0.123`);
  // a fixed ASCII last label keeps it a name.
  const ascii = domainToASCII(name.slice(start, end) + '.a')
  if (!ascii.endsWith('.a')) return { index: nonAscii, message: 'cannot convert this label to punycode' }
  const label = ascii.slice(0, -2)
  for (let i = 0; i < label.length; i++) {
    if (!isLabelByte(label.charCodeAt(i))) return { index: nonAscii, message: 'cannot convert this label to punycode' }
  }
  return label.length === 0 ? { index: nonAscii, message: 'cannot convert this label to punycode' } : label
}

function isLabelByte(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f
}

function badChar(name: string, i: number): NameProblem {
  const ch = name[i]!
  const shown = JSON.stringify(ch)
  let hint = 'a label is letters, digits, "-" and "_"'
  if (ch === ' ' || ch === '\t') hint = 'names have no spaces'
  else if (ch === ':' && name[i + 1] === '/') hint = 'write the host name only, not a URL'
  else if (ch === ':') hint = 'ports go in "ports: [443/tcp]", not in the name'
  else if (ch === '/') hint = 'write the host name only, not a URL'
  else if (ch === '@') hint = 'write the host name only'
  return { index: i, message: `invalid character ${shown}`, hint }
}
