/**
 * `egressd run`: the process around a Daemon. Signal handlers go in before anything
 * else, so a SIGHUP or SIGTERM that arrives while the configuration is still being
 * compiled or the listeners bound never meets Node's default action (exit 129 or 143
 * with no log line): a reload waits for the start, a stop follows it.
 */
import { Daemon, StartError } from './daemon/daemon.js'
import { ListenError } from './errors.js'
import { configFailure, EXIT_FAILED, EXIT_OK } from './exit-codes.js'

export async function runDaemon(file: string): Promise<number> {
  let daemon: Daemon | null = null
  let stopSignal: string | null = null
  let reloadWanted = false
  let stopped: ((code: number) => void) | null = null
  const onHup = (): void => {
    if (daemon === null) reloadWanted = true
    else void daemon.reload()
  }
  const onStop = (signal: string): void => {
    stopSignal ??= signal
    if (daemon !== null) void daemon.stop(signal).then(() => stopped?.(EXIT_OK))
  }
  const onTerm = (): void => onStop('SIGTERM')
  const onInt = (): void => onStop('SIGINT')
  process.on('SIGHUP', onHup)
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onInt)
  const done = new Promise<number>((resolve) => (stopped = resolve))
  try {
    try {
      daemon = await Daemon.open(file)
    } catch (e) {
      return configFailure(e)
    }
    const d = daemon
    if (stopSignal !== null) {
      // Asked to stop while the configuration was loading: nothing is bound yet.
      d.log.info({ signal: stopSignal }, 'stopped before start')
      return EXIT_OK
    }
    try {
      await d.start()
    } catch (e) {
      if (!(e instanceof StartError)) throw e
      // One line an operator can act on: what, where, why and the usual fix; no stack.
      // `listener`, not `service`: every line already carries service "egressd".
      const cause = e.cause
      if (cause instanceof ListenError) {
        d.log.fatal({ listener: cause.service, transport: cause.transport, address: cause.address, reason: cause.reason, hint: cause.hint }, cause.message)
      } else {
        d.log.fatal({ reason: (cause as { code?: string })?.code ?? null }, e.message)
      }
      return EXIT_FAILED
    }
    if (reloadWanted) void d.reload()
    if (stopSignal !== null) void d.stop(stopSignal).then(() => stopped?.(EXIT_OK))
    return await done
  } finally {
    process.off('SIGHUP', onHup)
    process.off('SIGTERM', onTerm)
    process.off('SIGINT', onInt)
  }
}
