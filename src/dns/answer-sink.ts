/**
 * The firewall contract, declared once: what the DNS side hands to whoever opens the
 * firewall for an allowed answer (the nftables sink; tests; nothing at all). The answer
 * leaves only once the returned promise settles, so a device's first packet finds its
 * elements; a rejection is counted and logged, and the answer still goes out.
 *
 * `AnswerFeed` keeps, beside the cache and not in it, what the sink was already told
 * about each stored answer: one call per upstream answer however many clients waited
 * on it, and one refresh in the second half of its life.
 */
import type { Rule } from '../policy/types.js'
import type { StoredAnswer } from './cache.js'
import type { AnswerAddress } from './wire.js'

export type { AnswerAddress }

export interface AllowedAnswer {
  /** The queried name, as text. */
  readonly name: string
  /** The rule that let it through: its ports are the ones to open. */
  readonly rule: Rule
  readonly addresses: readonly AnswerAddress[]
  /** The device that asked. */
  readonly client: string
}

/**
 * `perClient`: the sink keys what it opens by the client (firewall scope `device`), so
 * it must hear every client's answer, cache hits included, and does its own per-client
 * dedupe; returning undefined then means nothing to wait for.
 */
export type AllowedAnswerSink = ((answer: AllowedAnswer) => Promise<void> | void) & { readonly perClient?: boolean }

interface FeedState {
  /** The call for this upstream answer, shared by every client waiting on it. */
  first: Promise<void> | null
  /** Refreshed once, in the second half of the entry's life. */
  refreshed: boolean
}

export class AnswerFeed {
  /** Keyed by the stored answer itself: an entry the cache drops takes its state with it. */
  private readonly state = new WeakMap<StoredAnswer, FeedState>()

  constructor(
    private readonly sink: AllowedAnswerSink,
    private readonly onError: (err: unknown, name: string) => void,
  ) {}

  /**
   * A fresh upstream answer: one sink call, whichever client's answer gets there first
   * (a per-client sink: one call per client, each waiting on the same upstream answer).
   */
  fresh(entry: StoredAnswer, answer: () => AllowedAnswer): Promise<void> | null {
    if (this.sink.perClient === true) return this.callDirect(answer())
    const s = this.stateOf(entry)
    s.first ??= this.call(answer())
    return s.first
  }

  /**
   * A cache hit `elapsed` seconds into the entry's life: in its second half, refresh
   * the elements once with the remaining TTLs, so they outlive the answer the client
   * now caches. Null when nothing needs doing (the common hit).
   */
  hit(entry: StoredAnswer, elapsed: number, answer: () => AllowedAnswer): Promise<void> | null {
    // Per client: every hit, since another device's refresh opens nothing for this one;
    // the sink skips elements written less than half their timeout ago.
    if (this.sink.perClient === true) return this.callDirect(answer())
    if (entry.lifetime - elapsed >= entry.lifetime / 2) return null
    const s = this.stateOf(entry)
    if (s.refreshed) return null
    s.refreshed = true
    return this.call(answer())
  }

  private stateOf(entry: StoredAnswer): FeedState {
    let s = this.state.get(entry)
    if (s === undefined) this.state.set(entry, (s = { first: null, refreshed: false }))
    return s
  }

  /** Synchronous call: a sink with nothing to wait for keeps a cache hit synchronous. */
  private callDirect(answer: AllowedAnswer): Promise<void> | null {
    if (answer.addresses.length === 0) return null
    let r: Promise<void> | void
    try {
      r = this.sink(answer)
    } catch (err) {
      this.onError(err, answer.name)
      return null
    }
    return r === undefined ? null : r.catch((err: unknown) => this.onError(err, answer.name))
  }

  private call(answer: AllowedAnswer): Promise<void> {
    if (answer.addresses.length === 0) return Promise.resolve()
    return Promise.resolve()
      .then(() => this.sink(answer))
      .catch((err: unknown) => this.onError(err, answer.name))
  }
}
