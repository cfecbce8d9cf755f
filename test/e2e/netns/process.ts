/**
 * A child process inside a network namespace whose stdout is JSON lines: the built
 * egressd (`ip netns exec GW node dist/cli.js run -c FILE`, the namespaced variant of
 * test/helpers/daemon.ts) and the world's servers (world.mjs).
 */
import { spawn } from 'node:child_process'
import { watchJsonLines, type JsonLine, type JsonProcess } from '../../helpers/json-process.js'

export { CLI } from '../../helpers/daemon.js'

export type { JsonLine }
/** The namespaced variant of test/helpers/daemon.ts: same JSON-line watcher, lenient about other lines. */
export type NsProcess = JsonProcess

/**
 * `ip netns exec` execs the command in place, so the pid is node's and signals reach it
 * directly. NODE_OPTIONS is dropped: tap's loader hooks are for its own TypeScript
 * processes, and these children run plain JavaScript.
 */
export function spawnInNs(ns: string, argv: string[]): NsProcess {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { stdio: ['pipe', 'pipe', 'pipe'], env })
  // A closed stdin is world.mjs's signal to stop if this test process dies first.
  proc.stdin!.on('error', () => {})
  return watchJsonLines(proc, false)
}

/** egressd's log lines have `msg`; this waits for one. */
export const logMsg = (msg: string) => (l: JsonLine) => l.msg === msg
