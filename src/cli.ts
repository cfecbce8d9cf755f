#!/usr/bin/env node
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { domainToASCII } from 'node:url'
import { allGroups } from './config/groups.js'
import { loadConfig } from './config/load.js'
import { ipToBytes } from './config/net.js'
import { Decider, Decision, VERDICT_ALLOWED, VERDICT_WOULD_BLOCK } from './policy/decide.js'
import { GroupSet, type CompiledGroup } from './policy/groups.js'
import { formatPort, type Rule } from './policy/types.js'
import { Observations } from './suggest/observe.js'
import { describeAccess, UI_DEFAULTS } from './ui/access.js'
import { render } from './suggest/render.js'
import { findDaemons } from './reload-command.js'
import { version } from './version.js'
import { configFailure } from './exit-codes.js'

const USAGE = `usage:
  egressd run -c FILE               run the daemon in the foreground (SIGHUP reloads, SIGTERM stops)
  egressd check -c FILE [--client IP] [--json] NAME…
                                    allow, block or would_block (report) for each name, the group
                                    (--client picks it; else the top-level policy) and the rule that
                                    decided; exit 0 all allowed, 1 any blocked or would_block, 2 bad configuration
  egressd suggest [-c FILE] [--threshold N] [LOGFILE|-]
                                    read egressd's JSON logs (stdin by default) and print a proposed
                                    allowlist per group as YAML; -c leaves out names FILE already allows
  egressd validate -c FILE          check a configuration; exit 0 valid, 2 with file:line:col lines
  egressd reload -c FILE            validate FILE, then SIGHUP every \`egressd run -c FILE\` on this host
                                    exit 0 signalled, 1 none running, 2 bad configuration
  egressd --help | --version`

interface Args {
  command: string
  file: string | null
  json: boolean
  client: string | null
  threshold: number
  names: string[]
}

function parseArgs(argv: string[]): Args | string {
  const args: Args = { command: '', file: null, json: false, client: null, threshold: 5, names: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '-c' || a === '--config') {
      const v = argv[++i]
      if (v === undefined) return `${a} needs a file`
      args.file = v
    } else if (a.startsWith('--config=')) args.file = a.slice(9)
    else if (a === '--json') args.json = true
    else if (a === '--client' || a.startsWith('--client=')) {
      const v = a === '--client' ? argv[++i] : a.slice(9)
      if (v === undefined) return '--client needs an IP address'
      args.client = v
    } else if (a === '--threshold' || a.startsWith('--threshold=')) {
      const v = a === '--threshold' ? argv[++i] : a.slice(12)
      if (v === undefined || !/^[0-9]{1,6}$/.test(v) || Number(v) < 2) return '--threshold needs a whole number of at least 2'
      args.threshold = Number(v)
    } else if (a === '-' && args.command !== '') args.names.push(a)
    else if (a === '-h' || a === '--help') args.command = 'help'
    else if (a === '-V' || a === '--version') args.command = 'version'
    else if (a === '--') args.names.push(...argv.slice(i + 1)), (i = argv.length)
    else if (a.startsWith('-') && a.length > 1) return `unknown option ${a}`
    else if (args.command === '') args.command = a
    else args.names.push(a)
  }
  return args
}

function validate(file: string): number {
  try {
    const { config, warnings } = loadConfig(file)
    for (const w of warnings) process.stderr.write(w + '\n')
    const groups = GroupSet.compile(allGroups(config))
    const policy = groups.default.policy
    process.stdout.write(`${file}: valid; ${policy.size} rules from ${config.policy.length} entries` +
      (config.presets.length ? ` (presets: ${config.presets.join(', ')})` : '') +
      (config.mode === 'report' ? '; mode report' : '') +
      (groups.named ? `; groups: ${groups.groups.slice(0, -1).map((g) => `${g.name} (${g.policy.size} rules${g.mode === 'report' ? ', report' : ''})`).join(', ')}` : '') + '\n')
    process.stdout.write(describeAccess(config.ui ?? UI_DEFAULTS, config.metrics.listen) + '\n')
    return 0
  } catch (e) {
    return configFailure(e)
  }
}

function check(file: string, names: string[], json: boolean, client: string | null): number {
  let decider: Decider
  let group: CompiledGroup
  let why: string
  try {
    const config = loadConfig(file).config
    decider = new Decider(GroupSet.compile(allGroups(config)), { blockResponse: config.dns.blockResponse })
  } catch (e) {
    return configFailure(e)
  }
  if (client !== null) {
    if (ipToBytes(client) === null) {
      process.stderr.write(`egressd check: --client "${client}" is not an IP address\n`)
      return 2
    }
    // The daemon's own selector: the same CIDR table, the same first-match order.
    const found = decider.groups.explain(client)
    group = found.group
    why = found.cidr !== null
      ? `client ${client} is in ${found.cidr.text} (group at ${group.config.source})`
      : `client ${client} is in no group's clients: the top-level policy`
  } else {
    group = decider.groups.default
    why = 'no --client given: the top-level policy'
  }
  if (!json && (client !== null || decider.groups.named)) {
    process.stdout.write(`group\t${group.name}\t${why}${group.mode === 'report' ? '; mode report' : ''}\n`)
  }
  const d = new Decision()
  let anyBlocked = false
  for (const typed of names) {
    // Names are taken as typed; Unicode becomes punycode first (docs/design.md, policy semantics). An
    // unconvertible name stays as typed and so matches nothing.
    const name = /^[\x00-\x7f]*$/.test(typed) ? typed : domainToASCII(typed) || typed
    decider.decideNameIn(group, name, d)
    const rule = d.rule
    const allowed = d.verdict === VERDICT_ALLOWED
    const passed = d.verdict === VERDICT_WOULD_BLOCK ? d.passedBy : null
    // A name that passes only by report is not on the allowlist: it fails check like a block.
    anyBlocked ||= !allowed
    const verdict = allowed ? 'allow' : passed !== null ? 'would_block' : 'block'
    const dns = allowed || passed !== null ? 'answer' : d.answer
    if (json) {
      process.stdout.write(JSON.stringify({
        name: typed, ascii: name, verdict, dns,
        rule: rule?.pattern ?? null, action: rule?.action ?? null, entry: rule?.entry ?? null,
        source: rule?.source ?? null, ports: d.passedBy?.ports.map(formatPort) ?? [],
        group: group.name, mode: group.mode, report: passed !== null,
        report_rule: passed === null ? null : passed.id < 0 ? null : passed.pattern, report_source: passed?.source ?? null,
      }) + '\n')
      continue
    }
    let line = rule === null ? 'no rule' : `${rule.action} ${rule.pattern}` + (rule.entry !== rule.pattern ? ` from "${rule.entry}"` : '') +
      ` at ${rule.source}` + (allowed ? ` ports ${rule.ports.map(formatPort).join(',')}` : '')
    if (dns === 'nodata') line += ' (answered NODATA: allowed names exist below it)'
    if (passed !== null) line += `; let through by ${reportedBy(passed, group)}`
    process.stdout.write(`${verdict}\t${typed}${name !== typed ? ` (${name})` : ''}\t${line}\n`)
  }
  return anyBlocked ? 1 : 0
}

function reportedBy(rule: Rule, group: CompiledGroup): string {
  const ports = ` ports ${rule.ports.map(formatPort).join(',')}`
  return rule.id < 0
    ? `mode: report of group ${group.name}${ports}`
    : `report entry ${rule.pattern}` + (rule.entry !== rule.pattern ? ` from "${rule.entry}"` : '') + ` at ${rule.source}${ports}`
}

/** `egressd suggest`: the configuration is optional; it only filters what is already allowed. */
async function suggest(file: string | null, inputs: string[], threshold: number): Promise<number> {
  if (inputs.length > 1) {
    process.stderr.write('egressd suggest: one log file (or - for stdin)\n')
    return 2
  }
  let groups: GroupSet | undefined
  if (file !== null) {
    try {
      groups = GroupSet.compile(allGroups(loadConfig(file).config))
    } catch (e) {
      return configFailure(e)
    }
  }
  const input = inputs[0] ?? '-'
  const stream = input === '-' ? process.stdin : createReadStream(input)
  const obs = new Observations()
  try {
    const lines = createInterface({ input: stream, crlfDelay: Infinity })
    for await (const line of lines) obs.add(line)
  } catch (e) {
    process.stderr.write(`egressd suggest: cannot read ${input}: ${(e as Error).message}\n`)
    return 2
  }
  process.stdout.write(render(obs, {
    threshold,
    input: input === '-' ? 'stdin' : input,
    config: file !== null && groups !== undefined ? { file, groups } : undefined,
  }))
  return 0
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
    case 'suggest':
      return suggest(args.file, args.names, args.threshold)
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
        return check(args.file, args.names, args.json, args.client)
      }
      const { runDaemon } = await import('./run-command.js')
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
