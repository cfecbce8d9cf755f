/**
 * What the status page reads of the running configuration: the daemon's compiled
 * configuration satisfies it structurally, so src/ui needs nothing from src/daemon (which
 * builds the page) and the two folders do not import each other.
 */
import type { Config } from '../config/types.js'
import type { GroupSet } from '../policy/groups.js'

export interface UiView {
  readonly config: Config
  readonly groups: GroupSet
  /** sha256 prefix of the configuration as read (egressd_config_info{hash}). */
  readonly hash: string
}
