/**
 * Every process of the DNS benchmark starts through here: pinned to a core with taskset
 * and, with `--nice N`, at a raised priority, so that on a machine busy with other work
 * the servers and dnsperf are not measured mostly waiting for a time slice. Both servers
 * and the client get the same treatment.
 */
let niceness: number | null = null

export function setNiceness(n: number | null): void {
  niceness = n
}

/** The command and arguments that run `argv` on `cpu`. */
export function pinned(cpu: string, argv: readonly string[]): [string, string[]] {
  const args = ['-c', cpu, ...argv]
  return niceness === null ? ['taskset', args] : ['nice', ['-n', String(niceness), 'taskset', ...args]]
}
