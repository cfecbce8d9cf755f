/**
 * Command-line parsing on Node's own `util.parseArgs`, per command (src/cli/commands.ts).
 * One thing it does not do by itself: `-c=FILE` (it would read the value as "=FILE";
 * people write it as they write `--config=FILE`). Options follow the command, except
 * `--help` and `--version`.
 */
import { parseArgs } from 'node:util'
import { commandSpec, type CommandName, type CommandSpec } from './commands.js'

export interface ParsedCommand {
  readonly command: CommandName
  readonly spec: CommandSpec
  readonly values: Readonly<Record<string, string | boolean | undefined>>
  readonly positionals: readonly string[]
}

export type Parsed =
  | { readonly kind: 'command'; readonly cmd: ParsedCommand }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage'; readonly error: string | null }
  | { readonly kind: 'error'; readonly error: string; readonly spec: CommandSpec | null }

export function parseCommandLine(argv: readonly string[]): Parsed {
  const first = argv.findIndex((a) => !a.startsWith('-') || a === '-')
  const before = first < 0 ? argv : argv.slice(0, first)
  if (before.includes('-V') || before.includes('--version')) return { kind: 'version' }
  if (before.includes('-h') || before.includes('--help')) return { kind: 'usage', error: null }
  if (before.length > 0) return { kind: 'error', error: `${before[0]} goes after the command (egressd COMMAND ${before[0]} …)`, spec: null }
  if (first < 0) return { kind: 'usage', error: 'name a command' }
  const name = argv[first]!
  const spec = commandSpec(name)
  if (spec === undefined) return { kind: 'error', error: `unknown command "${name}"`, spec: null }
  const rest = argv.slice(first + 1)
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: rest, options: spec.options, allowPositionals: true, strict: true, tokens: true })
  } catch (e) {
    let error = cleanMessage((e as Error).message)
    // `check -api.example.com` (a name item 2 of validate warns about) reads as options.
    const name = spec.positionals.max > 0 && error.startsWith('unknown option') ? rest.find((a) => /^-[^-=][^=]*\.[^=]*$/.test(a)) : undefined
    if (name !== undefined) error += `; to name "${name}", put -- before it: egressd ${spec.name}${spec.options.config ? ' -c FILE' : ''} -- ${name}`
    return { kind: 'error', error, spec }
  }
  const values: Record<string, string | boolean | undefined> = { ...parsed.values } as Record<string, string | boolean | undefined>
  // parseArgs keeps the last of a repeated option; a wrapper's `-c` followed by the
  // operator's would then pick a file without a word, so a value given twice is refused.
  const seen = new Map<string, string>()
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== 'option' || typeof token.value !== 'string') continue
    let value = token.value
    if (token.rawName === '-c' && token.inlineValue && value.startsWith('=')) value = value.slice(1)
    const first = seen.get(token.name)
    if (first !== undefined) {
      const short = spec.options[token.name]?.short
      return { kind: 'error', error: `${short ? `-${short}, ` : ''}--${token.name} given twice ("${first}", then "${value}"); name one ${token.name === 'config' ? 'file' : 'value'}`, spec }
    }
    seen.set(token.name, value)
    values[token.name] = value
  }
  // `help check --help` asks about check, as `help check` does.
  const about = name === 'help' && parsed.positionals.length > 0 ? parsed.positionals[0]! : name
  if (values.help === true) return { kind: 'command', cmd: { command: 'help', spec: commandSpec('help')!, values: {}, positionals: [about] } }
  if (typeof values.config === 'string' && values.config === '') return { kind: 'error', error: '-c needs a file', spec }
  const { min, max, what } = spec.positionals
  const positionals = parsed.positionals
  if (positionals.length < min) return { kind: 'error', error: `name at least one ${what}`, spec }
  if (positionals.length > max) {
    return { kind: 'error', error: max === 0 ? `unexpected argument "${positionals[0]}"` : `at most ${max} ${what}${max > 1 ? 's' : ''}`, spec }
  }
  return { kind: 'command', cmd: { command: spec.name, spec, values, positionals } }
}

/** parseArgs says "Option '-c, --config <value>' argument missing"; the operator typed one of the two. */
function cleanMessage(message: string): string {
  return message
    .replace(/^Option '([^']+) <value>' argument missing.*$/s, '$1 needs a value')
    .replace(/^Option '([^']+)' does not take an argument.*$/s, '$1 takes no value')
    .replace(/^Unknown option '([^']+)'.*$/s, 'unknown option $1')
    .replace(/\. To specify a positional argument.*$/s, '')
}
