import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml'
import { ConfigError } from '../errors.js'
import { didYouMean } from './did-you-mean.js'

/**
 * Reads a YAML document node by node and records every problem as a ConfigError
 * located at the offending node, so one pass reports all of them (`file:line:col:
 * message` each) instead of stopping at the first.
 */
export class YamlReader {
  /** At most MAX_ERRORS; `unlisted` counts the rest. */
  readonly errors: ConfigError[] = []
  unlisted = 0
  readonly root: Node | null
  private readonly lines = new LineCounter()

  constructor(
    readonly file: string,
    text: string,
  ) {
    const doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: true, uniqueKeys: true })
    for (const e of doc.errors) {
      const at = e.linePos?.[0] ?? { line: 1, col: 1 }
      // yaml reports a stack overflow (about 800 nested [ or { here) in V8's own words.
      const message = e.code === 'RESOURCE_EXHAUSTION' && /call stack/.test(e.message)
        ? 'the YAML is nested too deeply to read (lists or mappings inside each other; a configuration needs a few levels)'
        : e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')
      this.add(at.line, at.col, message)
    }
    this.root = doc.errors.length > 0 ? null : (doc.contents as Node | null)
  }

  position(node: Node | null | undefined, offset = 0): { line: number; col: number } {
    const start = node?.range?.[0] ?? 0
    return this.lines.linePos(start + offset)
  }

  /** `file:line:col` of a node, for rule sources. */
  where(node: Node | null | undefined): string {
    const { line, col } = this.position(node)
    return `${this.file}:${line}:${col}`
  }

  error(node: Node | null | undefined, message: string, offset = 0): void {
    if (this.errors.length >= MAX_ERRORS) {
      this.unlisted++
      return
    }
    const { line, col } = this.position(node, offset)
    this.add(line, col, message)
  }

  /** Takes the problems found in another file (a preset, an included file), within MAX_ERRORS. */
  adopt(other: YamlReader): void {
    for (const e of other.errors) {
      if (this.errors.length >= MAX_ERRORS) this.unlisted++
      else this.errors.push(e)
    }
    this.unlisted += other.unlisted
  }

  /** One problem found outside this file's text (a preset that cannot be read), within MAX_ERRORS. */
  adoptError(e: ConfigError): void {
    if (this.errors.length >= MAX_ERRORS) this.unlisted++
    else this.errors.push(e)
  }

  private add(line: number, col: number, message: string): void {
    if (this.errors.length >= MAX_ERRORS) this.unlisted++
    else this.errors.push(new ConfigError(this.file, line, col, message))
  }

  /**
   * The errors to report, in file order (they are collected section by section;
   * operators read them top to bottom): this file's first, then each other file's (presets,
   * included files) in the order they were read; past MAX_ERRORS a last line says how
   * many more were found, at the position of the last one listed.
   */
  report(): ConfigError[] {
    const rank = new Map<string, number>([[this.file, 0]])
    for (const e of this.errors) if (!rank.has(e.file)) rank.set(e.file, rank.size)
    const out = [...this.errors].sort((a, b) => rank.get(a.file)! - rank.get(b.file)! || a.line - b.line || a.col - b.col)
    if (this.unlisted > 0) {
      const last = out[out.length - 1]!
      out.push(new ConfigError(this.file, last.line, last.col, `${this.unlisted} more problems not listed (at most ${MAX_ERRORS} are)`))
    }
    return out
  }

  /**
   * A mapping's values by key; unknown keys are errors with a did-you-mean hint, or with
   * `misplaced(key)` when it has something better to say (a key of another file kind).
   */
  map(node: Node | null | undefined, path: string, known: readonly string[], misplaced?: (key: string) => string | undefined): Map<string, Node | null> {
    const out = new Map<string, Node | null>()
    if (node === null || node === undefined) return out
    if (!isMap(node)) {
      this.error(node, `${path || 'the document'} must be a mapping (key: value lines), not ${describe(node)}`)
      return out
    }
    for (const pair of node.items) {
      const keyNode = pair.key as Node
      const key = isScalar(keyNode) ? String(keyNode.value) : ''
      const full = path ? `${path}.${key}` : key
      if (!known.includes(key)) {
        const elsewhere = misplaced?.(full)
        if (elsewhere !== undefined) {
          this.error(keyNode, elsewhere)
          continue
        }
        const hint = didYouMean(key, known)
        this.error(keyNode, `unknown key ${quote(full)}` + (hint ? `; did you mean "${path ? path + '.' : ''}${hint}"?` : `; known keys here: ${known.join(', ')}`))
        continue
      }
      out.set(key, (pair.value as Node | null) ?? null)
    }
    return out
  }

  bool(node: Node | null | undefined, path: string, fallback: boolean): boolean {
    if (node === null || node === undefined) return fallback
    if (isScalar(node) && typeof node.value === 'boolean') return node.value
    this.error(node, `${path} must be true or false, not ${describe(node)}`)
    return fallback
  }

  int(node: Node | null | undefined, path: string, fallback: number, min: number, max: number): number {
    if (node === null || node === undefined) return fallback
    if (isScalar(node) && typeof node.value === 'number' && Number.isInteger(node.value) && node.value >= min && node.value <= max) return node.value
    this.error(node, `${path} must be a whole number from ${min} to ${max}, not ${describe(node)}`)
    return fallback
  }

  string(node: Node | null | undefined, path: string): string | null {
    if (node === null || node === undefined) return null
    if (isScalar(node) && typeof node.value === 'string') return node.value
    this.error(node, `${path} must be a string, not ${describe(node)}`)
    return null
  }

  oneOf<T extends string>(node: Node | null | undefined, path: string, choices: readonly T[], fallback: T): T {
    if (node === null || node === undefined) return fallback
    const value = isScalar(node) ? String(node.value) : null
    if (value !== null && (choices as readonly string[]).includes(value)) return value as T
    this.error(node, `${path} must be one of ${choices.join(', ')}, not ${describe(node)}`)
    return fallback
  }

  /** Items of a sequence; a missing key gives `[]`. */
  list(node: Node | null | undefined, path: string): Node[] {
    if (node === null || node === undefined) return []
    if (isSeq(node)) return node.items as Node[]
    this.error(node, `${path} must be a list ([a, b] or "- a" lines), not ${describe(node)}`)
    return []
  }
}

/**
 * A file with 200 000 bad entries took 15 s and printed 200 000 lines; past this many
 * problems the rest are only counted.
 */
export const MAX_ERRORS = 100

export function describe(node: Node | null | undefined): string {
  if (node === null || node === undefined) return 'nothing'
  if (isMap(node)) return 'a mapping'
  if (isSeq(node)) return 'a list'
  if (isScalar(node)) {
    if (node.value === null) return 'null'
    if (typeof node.value === 'string' && node.value.length > MAX_SHOWN) return `${JSON.stringify(node.value.slice(0, SHOWN_HEAD) + '…')} (${node.value.length} characters)`
    return JSON.stringify(node.value)
  }
  return 'an alias'
}

/**
 * Messages quote at most this many characters of a value: a 50 MB scalar in a message
 * would be written to the terminal or journal whole. Longer values show their first
 * SHOWN_HEAD characters, an ellipsis and their length.
 */
export const MAX_SHOWN = 100
const SHOWN_HEAD = 60

/** `"text"`, shortened as `describe` does when it is longer than MAX_SHOWN. */
export function quote(text: string): string {
  return text.length > MAX_SHOWN ? `"${text.slice(0, SHOWN_HEAD)}…" (${text.length} characters)` : `"${text}"`
}
