#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { domainToASCII } from 'node:url'
import { ConfigErrors } from './errors.js'
import { loadConfig } from './config/load.js'
import { compilePolicy } from './policy/compile.js'
import { formatPort } from './policy/types.js'
import { findDaemons } from './reload-command.js'

const USAGE = `usage:
  egressd run -c FILE               run the daemon in the foreground (SIGHUP reloads, SIGTERM stops)
  egressd check -c FILE [--json] NAME…
                                    allow or block for each name, and the rule that decided
                                    exit 0 all allowed, 1 any blocked, 2 bad configuration
  egressd validate -c FILE          check a configuration; exit 0 valid, 2 with file:line:col lines
  egressd reload -c FILE            validate FILE, then SIGHUP every \`egressd run -c FILE\` on this host
                                    exit 0 signalled, 1 none running, 2 bad configuration
  egressd --help | --version`

interface Args {
  command: string
  file: string | null
  json: boolean
  names: string[]
}

function parseArgs(argv: string[]): Args | string {
  const args: Args = { command: '', file: null, json: false, names: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '-c' || a === '--config') {
      const v = argv[++i]
      if (v === undefined) return `${a} needs a file`
      args.file = v
    } else if (a.startsWith('--config=')) args.file = a.slice(9)
    else if (a === '--json') args.json = true
    else if (a === '-h' || a === '--help') args.command = 'help'
    else if (a === '-V' || a === '--version') args.command = 'version'
    else if (a === '--') args.names.push(...argv.slice(i + 1)), (i = argv.length)
    else if (a.startsWith('-') && a.length > 1) return `unknown option ${a}`
    else if (args.command === '') args.command = a
    else args.names.push(a)
  }
  return args
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/** Prints configuration errors one per line and returns exit code 2; anything else is a bug and rethrown. */
function configFailure(e: unknown): number {
  if (e instanceof ConfigErrors) {
    for (const err of e.errors) process.stderr.write(err.message + '\n')
    return 2
  }
  throw e
}

function validate(file: string): number {
  try {
    const { config, warnings } = loadConfig(file)
    for (const w of warnings) process.stderr.write(w + '\n')
    const policy = compilePolicy(config.policy)
    process.stdout.write(`${file}: valid; ${policy.size} rules from ${config.policy.length} entries` +
      (config.presets.length ? ` (presets: ${config.presets.join(', ')})` : '') + '\n')
    return 0
  } catch (e) {
    return configFailure(e)
  }
}

function check(file: string, names: string[], json: boolean): number {
  let policy
  try {
    policy = compilePolicy(loadConfig(file).config.policy)
  } catch (e) {
    return configFailure(e)
  }
  let anyBlocked = false
  for (const typed of names) {
    // Names are taken as typed; Unicode becomes punycode first (DESIGN.md). An
    // unconvertible name stays as typed and so matches nothing.
    const name = /^[\x00-\x7f]*$/.test(typed) ? typed : domainToASCII(typed) || typed
    const rule = policy.match(name)
    const allowed = rule !== null && rule.action === 'allow'
    const nodata = !allowed && policy.hasAllowedBelow(name)
    anyBlocked ||= !allowed
    const dns = allowed ? 'answer' : nodata ? 'nodata' : 'nxdomain'
    if (json) {
      process.stdout.write(JSON.stringify({
        name: typed, ascii: name, verdict: allowed ? 'allow' : 'block', dns,
        rule: rule?.pattern ?? null, action: rule?.action ?? null, entry: rule?.entry ?? null,
        source: rule?.source ?? null, ports: rule ? rule.ports.map(formatPort) : [],
      }) + '\n')
      continue
    }
    const why = rule === null
      ? 'no rule' + (nodata ? ' (answered NODATA: allowed names exist below it)' : '')
      : `${rule.action} ${rule.pattern}` + (rule.entry !== rule.pattern ? ` from "${rule.entry}"` : '') +
        ` at ${rule.source}` + (allowed ? ` ports ${rule.ports.map(formatPort).join(',')}` : '')
    process.stdout.write(`${allowed ? 'allow' : 'block'}\t${typed}${name !== typed ? ` (${name})` : ''}\t${why}\n`)
  }
  return anyBlocked ? 1 : 0
}

/** Refuses to signal with a file that would fail to load: the daemon would keep its old policy anyway, silently. */
function reload(file: string): number {
  const valid = validate(file)
  if (valid !== 0) return valid
  const pids = findDaemons(file)
  if (pids.length === 0) {
    process.stderr.write(`egressd reload: no running "egressd run -c ${file}" found\n`)
    return 1
  }
  for (const pid of pids) {
    process.kill(pid, 'SIGHUP')
    process.stdout.write(`sent SIGHUP to ${pid}\n`)
  }
  return 0
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv)
  if (typeof args === 'string') {
    process.stderr.write(`egressd: ${args}\n${USAGE}\n`)
    return 2
  }
  switch (args.command) {
    case 'help':
      process.stdout.write(USAGE + '\n')
      return 0
    case 'version':
      process.stdout.write(version() + '\n')
      return 0
    case 'run':
    case 'check':
    case 'reload':
    case 'validate': {
      if (args.file === null) {
        process.stderr.write(`egressd ${args.command}: -c FILE is required\n${USAGE}\n`)
        return 2
      }
      if (args.command === 'validate') return validate(args.file)
      if (args.command === 'reload') return reload(args.file)
      if (args.command === 'check') {
        if (args.names.length === 0) {
          process.stderr.write('egressd check: name at least one host name\n')
          return 2
        }
        return check(args.file, args.names, args.json)
      }
      const { runDaemon } = await import('./daemon.js')
      return runDaemon(args.file)
    }
    case '':
      process.stderr.write(USAGE + '\n')
      return 2
    default:
      process.stderr.write(`egressd: unknown command "${args.command}"\n${USAGE}\n`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    process.stderr.write(`egressd: internal error: ${(e as Error)?.stack ?? String(e)}\n`)
    process.exitCode = 70
  },
)
