import { spawn } from 'node:child_process'
import { EgressdError } from '../errors.js'

/** Applies one nft script as one transaction: all of it or none of it. */
export interface NftRunner {
  run(script: string): Promise<void>
  /**
   * Runs `nft ARGS…` and resolves with what it printed (the start-up probe lists a set
   * with it, scope device reads its sets back); more than `maxBytes` (default 1 MiB)
   * rejects.
   */
  query?(args: readonly string[], maxBytes?: number): Promise<string>
}

export class NftError extends EgressdError {
  constructor(message: string) {
    super('ENFT', message)
  }
}

export interface SpawnNftRunnerOptions {
  /**
   * The nft command and any prefix: `['nft']` by default; tests and the benchmark use
   * `['ip', 'netns', 'exec', NS, 'nft']` to reach the kernel of their own namespace.
   */
  readonly command?: readonly string[]
  /** A hung nft (a kernel busy with a huge transaction) is killed after this long. */
  readonly timeoutMs?: number
}

/** Only the start of stderr is kept: nft echoes the whole offending command, which for a batch is megabytes. */
const MAX_STDERR = 4096
/** query() reads listings; more than this (unless the caller says) is an error, not a buffer that grows. */
const MAX_STDOUT = 1 << 20

/** Spawns `nft -f -` with the script on stdin; rejects with an NftError carrying stderr. */
export class SpawnNftRunner implements NftRunner {
  private readonly command: readonly string[]
  private readonly timeoutMs: number

  constructor(options: SpawnNftRunnerOptions = {}) {
    this.command = options.command ?? ['nft']
    this.timeoutMs = options.timeoutMs ?? 10_000
  }

  run(script: string): Promise<void> {
    return this.spawnNft(['-f', '-'], script, MAX_STDOUT).then(() => undefined)
  }

  query(args: readonly string[], maxBytes = MAX_STDOUT): Promise<string> {
    return this.spawnNft(args, null, maxBytes)
  }

  private spawnNft(args: readonly string[], stdin: string | null, maxStdout: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.command[0]!, [...this.command.slice(1), ...args], {
        stdio: ['pipe', stdin === null ? 'pipe' : 'ignore', 'pipe'],
      })
      let stdout = ''
      let stderr = ''
      let settled = false
      const finish = (err: Error | null) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (err) reject(err)
        else resolve(stdout)
      }
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        finish(new NftError(`nft did not finish within ${this.timeoutMs} ms`))
      }, this.timeoutMs)
      child.stdout?.setEncoding('utf8')
      child.stdout?.on('data', (chunk: string) => {
        stdout += chunk
        if (stdout.length > maxStdout) {
          child.kill('SIGKILL')
          finish(new NftError(`nft printed more than ${maxStdout} bytes`))
        }
      })
      child.stderr!.setEncoding('utf8')
      child.stderr!.on('data', (chunk: string) => {
        if (stderr.length < MAX_STDERR) stderr += chunk.slice(0, MAX_STDERR - stderr.length)
      })
      child.on('error', (err) => finish(new NftError(`cannot run ${this.command.join(' ')}: ${err.message}`)))
      child.on('close', (code, signal) => {
        if (code === 0) finish(null)
        else finish(new NftError(`nft exited with ${code ?? signal}: ${firstLines(stderr)}`))
      })
      // EPIPE when nft dies before reading its input; 'close' reports the exit.
      child.stdin!.on('error', () => {})
      child.stdin!.end(stdin ?? '')
    })
  }
}

/** nft prints the error line, then the command and a caret line under it: keep the message, cut the echo. */
function firstLines(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '' && !/^\s*\^+\s*$/.test(l))
  const text = lines.slice(0, 2).join(' | ')
  return text.length > 400 ? text.slice(0, 400) + '…' : text
}
