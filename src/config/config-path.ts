import { closeSync, lstatSync, openSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { EgressdError } from '../errors.js'

/** Where a system installation keeps its configuration (the Debian conffile, the container's mount). */
export const ETC_CONFIG = '/etc/egressd/egressd.yaml'

/** The embedded default shipped with the code: `config/egressd.yaml`, two levels above dist/config/ (and src/config/). */
export const PACKAGED_CONFIG = fileURLToPath(new URL('../../config/egressd.yaml', import.meta.url))

export type ConfigSource = 'explicit' | 'etc' | 'packaged'

export interface ConfigPath {
  readonly file: string
  readonly source: ConfigSource
}

/**
 * The system configuration exists but cannot be used. Falling back to the packaged
 * default here would start a gateway with a policy the operator never wrote, so this
 * is an error that names the file (exit 2, like any configuration error).
 */
export class ConfigPathError extends EgressdError {
  constructor(
    readonly file: string,
    /** errno code (EACCES, ENOTDIR …) or EISDIR / ENOTREG for something that is not a regular file. */
    readonly reason: string,
    detail: string,
  ) {
    super('ECONFIGPATH', `${file}: cannot use configuration: ${detail}`)
  }
}

const DESCRIBE: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many symbolic links',
  EISDIR: 'is a directory',
  ENOTREG: 'not a regular file',
}

/**
 * Which configuration file `run`, `check` and `validate` use:
 * - `-c FILE` given: that file, unchecked here (loadConfig reports what is wrong with it);
 * - else `etcPath` when it exists and is a readable regular file;
 * - else, only when `etcPath` does not exist (ENOENT), `packagedDefault`.
 * Any other problem with `etcPath` (unreadable, a directory, a dangling path through a
 * file) throws ConfigPathError naming it: an operator who put a file there meant it.
 */
export function resolveConfigPath(explicit: string | undefined, etcPath = ETC_CONFIG, packagedDefault: string): ConfigPath {
  if (explicit !== undefined) return { file: explicit, source: 'explicit' }
  let isFile: boolean
  try {
    const st = statSync(etcPath)
    if (st.isDirectory()) throw new ConfigPathError(etcPath, 'EISDIR', DESCRIBE.EISDIR!)
    isFile = st.isFile()
  } catch (e) {
    if (e instanceof ConfigPathError) throw e
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO'
    if (code === 'ENOENT') {
      // A dangling symbolic link is something the operator put there, not an absent file.
      if (!isSymlink(etcPath)) return { file: packagedDefault, source: 'packaged' }
      throw new ConfigPathError(etcPath, 'ENOENT', 'a symbolic link to a file that does not exist')
    }
    throw new ConfigPathError(etcPath, code, DESCRIBE[code] ?? (e as Error).message)
  }
  if (!isFile) throw new ConfigPathError(etcPath, 'ENOTREG', DESCRIBE.ENOTREG!)
  // stat needs only search permission on the directories; opening is what proves the
  // file itself can be read by this user (a 0600 root file under DynamicUser, say).
  try {
    closeSync(openSync(etcPath, 'r'))
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO'
    throw new ConfigPathError(etcPath, code, DESCRIBE[code] ?? (e as Error).message)
  }
  return { file: etcPath, source: 'etc' }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink()
  } catch {
    return false
  }
}
