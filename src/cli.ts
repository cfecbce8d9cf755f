#!/usr/bin/env node
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { domainToASCII } from 'node:url'
import { allGroups } from './config/groups.js'
import { loadConfig } from './config/load.js'
import { parseIp } from './net/address.js'
import { Decider, Decision, VERDICT_ALLOWED, VERDICT_WOULD_BLOCK } from './policy/decide.js'
import { GroupSet, type CompiledGroup } from './policy/groups.js'
import { formatPort, type Rule } from './policy/types.js'
import { Observations } from './suggest/observe.js'
import { describeAccess, UI_DEFAULTS } from './ui/access.js'
import { render } from './suggest/render.js'
import { findDaemons } from './reload-command.js'
import { version } from './version.js'
import { configFailure } from './exit-codes.js'
import { ConfigPathError, ETC_CONFIG, PACKAGED_CONFIG, resolveConfigPath } from './config/config-path.js'
import { parseCommandLine, type ParsedCommand } from './cli/args.js'
import { commandHelp, commandSpec, usage } from './cli/commands.js'
import { hostNameProblem } from './policy/host-name.js'

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
    const { config, warnings } = loadConfig(file)
    // As validate prints them: "0 rules: every name is blocked" is often the whole answer.
    for (const w of warnings) process.stderr.write(w + '\n')
    decider = new Decider(GroupSet.compile(allGroups(config)), { blockResponse: config.dns.blockResponse })
  } catch (e) {
    return configFailure(e)
  }
  if (client !== null) {
    if (parseIp(client) === null) {
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
        name: typed, ascii: name, verdict, dns, invalid: rule === null ? hostNameProblem(name) : null,
        rule: rule?.pattern ?? null, action: rule?.action ?? null, entry: rule?.entry ?? null,
        source: rule?.source ?? null, ports: d.passedBy?.ports.map(formatPort) ?? [],
        group: group.name, mode: group.mode, report: passed !== null,
        report_rule: passed === null ? null : passed.id < 0 ? null : passed.pattern, report_source: passed?.source ?? null,
      }) + '\n')
      continue
    }
    const problem = rule === null ? hostNameProblem(name) : null
    let line = problem !== null ? `not a valid host name: ${problem}` : rule === null ? 'no rule' : `${rule.action} ${rule.pattern}` + (rule.entry !== rule.pattern ? ` from "${rule.entry}"` : '') +
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
  const parsed = parseCommandLine(argv)
  switch (parsed.kind) {
    case 'version':
      process.stdout.write(version() + '\n')
      return 0
    case 'usage':
      if (parsed.error === null) {
        process.stdout.write(usage() + '\n')
        return 0
      }
      process.stderr.write(`egressd: ${parsed.error}\n${usage()}\n`)
      return 2
    case 'error': {
      const prefix = parsed.spec === null ? 'egressd' : `egressd ${parsed.spec.name}`
      process.stderr.write(`${prefix}: ${parsed.error}\n${parsed.spec === null ? usage() : `usage: ${parsed.spec.usage}\n(egressd help ${parsed.spec.name} shows examples)`}\n`)
      return 2
    }
    case 'command':
      return command(parsed.cmd)
  }
}

async function command({ command, values, positionals }: ParsedCommand): Promise<number> {
  const config = typeof values.config === 'string' ? values.config : null
  switch (command) {
    case 'help': {
      const topic = positionals[0]
      if (topic === undefined) {
        process.stdout.write(usage() + '\n')
        return 0
      }
      const spec = commandSpec(topic)
      if (spec === undefined) {
        process.stderr.write(`egressd help: unknown command "${topic}"\n${usage()}\n`)
        return 2
      }
      process.stdout.write(commandHelp(spec) + '\n')
      return 0
    }
    case 'suggest': {
      let threshold = 5
      if (values.threshold !== undefined) {
        const v = String(values.threshold)
        if (!/^[0-9]{1,6}$/.test(v) || Number(v) < 2) {
          process.stderr.write('egressd suggest: --threshold needs a whole number of at least 2\n')
          return 2
        }
        threshold = Number(v)
      }
      return suggest(config, [...positionals], threshold)
    }
    default: {
      const file = configFile(command, config)
      if (file === null) return 2
      if (command === 'validate') return validate(file)
      if (command === 'reload') return reload(file)
      if (command === 'check') return check(file, [...positionals], values.json === true, typeof values.client === 'string' ? values.client : null)
      const { runDaemon } = await import('./run-command.js')
      return runDaemon(file)
    }
  }
}

/**
 * The configuration file a command uses: -c FILE, else /etc/egressd/egressd.yaml when it
 * exists, else the packaged default; null (after saying why) when /etc's file exists
 * but cannot be used — falling back then would run a policy the operator did not write.
 */
function configFile(command: string, given: string | null): string | null {
  try {
    return resolveConfigPath(given ?? undefined, ETC_CONFIG, PACKAGED_CONFIG).file
  } catch (e) {
    if (!(e instanceof ConfigPathError)) throw e
    process.stderr.write(`egressd ${command}: ${e.message}\n`)
    return null
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
