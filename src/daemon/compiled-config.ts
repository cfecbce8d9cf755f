/**
 * A configuration compiled for serving: everything a reload must have ready before the
 * swap, built in one place so the swap itself is a few field writes. Each component
 * takes its own slice of it (`dnsPolicy`, `sniPolicy`; the firewall and metrics take
 * their `config` sections directly).
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { allGroups } from '../config/groups.js'
import type { Config } from '../config/types.js'
import type { DnsPolicy } from '../dns/handler.js'
import { compilePolicy } from '../policy/compile.js'
import type { Policy } from '../policy/match.js'
import { entriesKey } from '../policy/packed-entries.js'
import { Decider } from '../policy/decide.js'
import { GroupSet } from '../policy/groups.js'
import type { SniPolicy } from '../sni/proxy.js'

export interface CompiledConfig {
  readonly config: Config
  readonly groups: GroupSet
  readonly decider: Decider
  readonly dns: DnsPolicy
  readonly sni: SniPolicy
  /** sha256 prefix of the file and what it includes, as read: `egressd_config_info{hash}`. */
  readonly hash: string
}

/** What a reload's worker (src/daemon/reload.ts) prepared off the event loop. */
export interface Precompiled {
  /** Policies by content key (entriesKey), for every list the running set did not already hold. */
  readonly policies: ReadonlyMap<string, Policy>
  readonly hash: string
}

/**
 * Compiles every group's policy (lists that did not change since `previous` keep their
 * compiled matcher, lists in `pre` come compiled) and the DNS rebinding exemptions.
 * With `pre` covering every list, this does no compiling and no file I/O.
 */
export function compileConfig(config: Config, previous?: CompiledConfig | null, pre?: Precompiled): CompiledConfig {
  const groups = GroupSet.compile(allGroups(config), previous?.groups, pre?.policies)
  const decider = new Decider(groups, { blockResponse: config.dns.blockResponse })
  const exempt = config.dns.rebindExempt
  return {
    config,
    groups,
    decider,
    dns: { settings: config.dns, decider, rebindExempt: exempt.length > 0 ? (pre?.policies.get(entriesKey(exempt)) ?? compilePolicy(exempt)) : null },
    sni: { settings: config.sni, decider },
    hash: config.hash ?? pre?.hash ?? fileHash(config.file),
  }
}

export function fileHash(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 12)
  } catch {
    // A configuration built in memory (tests) has no file to hash.
    return 'none'
  }
}
