/**
 * The command line's vocabulary in one table: each command's options (in the shape
 * `util.parseArgs` takes), its usage line, what it does and examples. The parser, the
 * top-level usage and `egressd help COMMAND` are all read from here, so they cannot
 * disagree.
 */
import type { ParseArgsConfig } from 'node:util'

export type CommandName = 'run' | 'check' | 'suggest' | 'validate' | 'reload' | 'help'

export interface CommandSpec {
  readonly name: CommandName
  readonly usage: string
  readonly summary: string
  /** Paragraphs after the usage line in `egressd help COMMAND`. */
  readonly details: readonly string[]
  readonly examples: readonly string[]
  readonly options: NonNullable<ParseArgsConfig['options']>
  /** What the positionals are, for the error when there are too many or too few. */
  readonly positionals: { readonly min: number; readonly max: number; readonly what: string }
}

const CONFIG = { config: { type: 'string', short: 'c' } } as const
const HELP = { help: { type: 'boolean', short: 'h' } } as const

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'run',
    usage: 'egressd run [-c FILE]',
    summary: 'run the daemon in the foreground (SIGHUP reloads, SIGTERM stops)',
    details: [
      'Logs JSON lines on stdout; the "ready" line names the configuration file in use.',
      'Exit 0 after a stop, 1 when a listener cannot be bound, 2 for a bad configuration.',
    ],
    examples: ['egressd run -c /etc/egressd/egressd.yaml', 'egressd run --config=./egressd.yaml'],
    options: { ...CONFIG, ...HELP },
    positionals: { min: 0, max: 0, what: '' },
  },
  {
    name: 'check',
    usage: 'egressd check [-c FILE] [--client IP] [--json] NAME…',
    summary: 'allow, block or would_block for each name, with the group and the rule that decided',
    details: [
      '--client IP picks the group that IP belongs to; without it the top-level policy judges.',
      'Exit 0 when every name is allowed, 1 when any is blocked or would_block (report), 2 for a bad configuration.',
      'A name that is not a valid host name is blocked, and check says why.',
      'The configuration\'s warnings go to stderr, as from validate; they do not change the exit code.',
    ],
    examples: [
      'egressd check -c egressd.yaml api.balena-cloud.com',
      'egressd check -c egressd.yaml --client 192.168.10.7 ntp.example.org',
      'egressd check -c egressd.yaml --json cloud.example.com | jq .rule',
    ],
    options: { ...CONFIG, ...HELP, client: { type: 'string' }, json: { type: 'boolean' } },
    positionals: { min: 1, max: Infinity, what: 'host name' },
  },
  {
    name: 'suggest',
    usage: 'egressd suggest [-c FILE] [--threshold N] [LOGFILE|-]',
    summary: "read egressd's JSON logs (stdin by default) and print a proposed allowlist per group as YAML",
    details: [
      '-c leaves out names FILE already allows; --threshold N (at least 2, default 5) distinct siblings under one parent become a *.parent wildcard.',
      'Wildcards at or above a public suffix (*.com, *.github.io) are never proposed.',
    ],
    examples: ['journalctl -u egressd -o cat | egressd suggest -c /etc/egressd/egressd.yaml', 'egressd suggest --threshold 3 egressd.log'],
    options: { ...CONFIG, ...HELP, threshold: { type: 'string' } },
    positionals: { min: 0, max: 1, what: 'log file' },
  },
  {
    name: 'validate',
    usage: 'egressd validate [-c FILE]',
    summary: 'check a configuration; exit 0 valid, 2 with file:line:col lines',
    details: ['Warnings (names that cannot exist, an empty policy) go to stderr and do not change the exit code.'],
    examples: ['egressd validate -c /etc/egressd/egressd.yaml'],
    options: { ...CONFIG, ...HELP },
    positionals: { min: 0, max: 0, what: '' },
  },
  {
    name: 'reload',
    usage: 'egressd reload [-c FILE]',
    summary: 'validate FILE, then SIGHUP every `egressd run` on FILE on this host',
    details: ['Exit 0 signalled, 1 none running, 2 bad configuration (nothing is signalled then).'],
    examples: ['egressd reload -c /etc/egressd/egressd.yaml'],
    options: { ...CONFIG, ...HELP },
    positionals: { min: 0, max: 0, what: '' },
  },
  {
    name: 'help',
    usage: 'egressd help [COMMAND]',
    summary: "this text, or one command's usage with examples",
    details: [],
    examples: ['egressd help check', 'egressd check --help'],
    options: { ...HELP },
    positionals: { min: 0, max: 1, what: 'command' },
  },
]

export function commandSpec(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name)
}

export function usage(): string {
  return [
    'usage:',
    ...COMMANDS.flatMap((c) => [`  ${c.usage}`, `      ${c.summary}`]),
    '  egressd --version',
    '',
    'Without -c, run, check, validate and reload use /etc/egressd/egressd.yaml when it',
    'exists, else the packaged default configuration. `egressd help COMMAND` shows examples.',
  ].join('\n')
}

export function commandHelp(spec: CommandSpec): string {
  return [
    `usage: ${spec.usage}`,
    '',
    spec.summary.charAt(0).toUpperCase() + spec.summary.slice(1) + '.',
    ...spec.details,
    '',
    'examples:',
    ...spec.examples.map((e) => `  ${e}`),
  ].join('\n')
}
