/**
 * Fair shares of one shared budget (pending upstream queries, DNS TCP connections, SNI
 * connections), per client address. Pure: no sockets, no clock.
 *
 * Rule, with `holders` the clients holding at least one unit (the asker included) and
 * reserve = ⌊budget / (holders + 1)⌋:
 *   - a client holding nothing may take a unit while any is free;
 *   - a client already holding units may take one more while it holds fewer than
 *     max(1, reserve) and the units held by all stay below budget − reserve.
 * So the clients already holding keep `reserve` units free for clients that hold none:
 * one device alone gets at most half the budget; thirty devices, each under its rate
 * limit, each asking for random names under an allowed wildcard of a slow upstream, leave
 * ⌊budget/31⌋ free (132 of the default 4096 pending upstream queries), and a 31st device
 * is served at once. Only the first units of newcomers come out of the reserve, so it
 * runs dry only when more clients than that arrive while all the others are saturated.
 *
 * The reserve shrinks as holders arrive; units already held are not taken back (an
 * exchange or connection in progress finishes), only new ones are refused until the
 * holder is back under the rule. The table holds only clients with units held, so it is
 * bounded by the budget.
 */
export class FairShare {
  private readonly held = new Map<string, number>()
  private total = 0

  constructor(public budget: number) {}

  /** ⌊budget / (holders + 1)⌋, `client` counted among the holders: its share, and what holders leave free. */
  reserveFor(client: string): number {
    const holders = this.held.size + (this.held.has(client) ? 0 : 1)
    return Math.floor(this.budget / (holders + 1))
  }

  /**
   * Why `take` would refuse now: 'budget' (every unit held), 'share' (this client holds
   * its share, or taking one would eat into the reserve for newcomers), or null.
   */
  refusal(client: string): 'budget' | 'share' | null {
    if (this.total >= this.budget) return 'budget'
    const mine = this.held.get(client) ?? 0
    if (mine === 0) return null
    const reserve = this.reserveFor(client)
    if (mine >= Math.max(1, reserve) || this.total >= this.budget - reserve) return 'share'
    return null
  }

  /** Takes one unit for `client` when the rule allows it. */
  take(client: string): boolean {
    if (this.refusal(client) !== null) return false
    this.held.set(client, (this.held.get(client) ?? 0) + 1)
    this.total++
    return true
  }

  /** Takes one unit whatever the rule says (a unit freed for this client just before). */
  force(client: string): void {
    this.held.set(client, (this.held.get(client) ?? 0) + 1)
    this.total++
  }

  release(client: string): void {
    const n = this.held.get(client)
    if (n === undefined) return
    if (n <= 1) this.held.delete(client)
    else this.held.set(client, n - 1)
    this.total--
  }

  holding(client: string): number {
    return this.held.get(client) ?? 0
  }

  /** Units held by all clients. */
  get used(): number {
    return this.total
  }

  /** Clients holding at least one unit. */
  get holders(): number {
    return this.held.size
  }

  /** The client holding the most units (ties: the first met), or null when none holds any. */
  largestHolder(): string | null {
    let best: string | null = null
    let most = 0
    for (const [client, n] of this.held) {
      if (n > most) {
        most = n
        best = client
      }
    }
    return best
  }
}
