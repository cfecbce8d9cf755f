/**
 * Why a typed name can never match an allow entry, in words an operator can act on
 * (`egressd check` prints it). Pure. The matcher itself never needs this: a name that
 * is not a host name simply matches no rule.
 */

const LABEL_CHAR = /^[a-z0-9_-]$/

/** null when `name` (ASCII, already lowercased or not, one trailing dot allowed) is a valid host name. */
export function hostNameProblem(name: string): string | null {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name
  if (bare.length === 0) return 'empty'
  if (bare.length > 253) return `${bare.length} characters long (at most 253)`
  const labels = bare.split('.')
  for (const [i, label] of labels.entries()) {
    if (label.length === 0) return i === 0 ? 'starts with a dot' : 'has an empty label (two dots in a row)'
    if (label.length > 63) return `label "${label.slice(0, 20)}…" is ${label.length} characters long (at most 63)`
    for (const ch of label.toLowerCase()) {
      if (!LABEL_CHAR.test(ch)) return `contains ${describe(ch)}`
    }
  }
  return null
}

function describe(ch: string): string {
  const code = ch.codePointAt(0)!
  if (ch === ' ') return "' ' (a space)"
  if (code < 0x20 || code === 0x7f) return `a control character (U+${code.toString(16).padStart(4, '0').toUpperCase()})`
  if (code > 0x7f) return `'${ch}' (not ASCII and not convertible to punycode)`
  return `'${ch}'`
}
