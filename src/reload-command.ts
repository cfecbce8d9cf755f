import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs'
import { basename, resolve } from 'node:path'

/**
 * `egressd reload -c FILE`: the daemons running `egressd run` on that same file (as
 * seen from each process's own working directory), found through /proc so no pid
 * file is needed. systemd units use `ExecReload=kill -HUP $MAINPID` instead.
 */
export function findDaemons(file: string): number[] {
  const target = realpathOrNull(resolve(file))
  if (target === null) return []
  const found: number[] = []
  let pids: string[]
  try {
    pids = readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))
  } catch {
    return []
  }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue
    let argv: string[]
    let cwd: string
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
      cwd = readlinkSync(`/proc/${pid}/cwd`)
    } catch {
      continue // gone, or not ours to read
    }
    const cli = argv.findIndex((a) => basename(a) === 'cli.js' || basename(a) === 'egressd')
    if (cli < 0 || argv[cli + 1] !== 'run') continue
    const configArg = configOf(argv.slice(cli + 2))
    if (configArg !== null && realpathOrNull(resolve(cwd, configArg)) === target) found.push(Number(pid))
  }
  return found
}

function configOf(args: string[]): string | null {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-c' || args[i] === '--config') return args[i + 1] ?? null
    if (args[i]!.startsWith('--config=')) return args[i]!.slice(9)
  }
  return null
}

function realpathOrNull(path: string): string | null {
  try {
    return realpathSync(path)
  } catch {
    return null
  }
}
