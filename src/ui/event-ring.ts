/**
 * The status page's memory of decisions: the newest `capacity` decision events that were
 * written to the log (src/log/decision.ts, DecisionTap), each stamped with a sequence
 * number and the time it arrived. Fixed-size array, overwritten in a circle: memory is
 * `capacity` events whatever the traffic. Pure apart from the clock it is given.
 */
import type { DecisionEvent } from '../log/decision.js'

export interface RingEvent extends DecisionEvent {
  /** 1, 2, 3 … since the daemon started; a client resumes after the last one it saw. */
  readonly seq: number
  /** Unix time in ms when the line was written. */
  readonly time: number
}

export type RingListener = (event: RingEvent) => void

export class EventRing {
  private slots: (RingEvent | undefined)[]
  private count = 0
  private seq = 0
  private readonly listeners = new Set<RingListener>()

  constructor(
    private cap: number,
    private readonly now: () => number = Date.now,
  ) {
    this.slots = new Array<RingEvent | undefined>(cap)
  }

  get capacity(): number {
    return this.cap
  }

  /** Events held now (≤ capacity). */
  get size(): number {
    return this.count
  }

  /** Sequence number of the newest event; 0 before the first. */
  get lastSeq(): number {
    return this.seq
  }

  push(event: DecisionEvent): RingEvent {
    const stamped: RingEvent = { ...event, seq: ++this.seq, time: this.now() }
    // seq s always lives in slot (s - 1) % capacity.
    this.slots[(this.seq - 1) % this.cap] = stamped
    if (this.count < this.cap) this.count++
    for (const l of this.listeners) l(stamped)
    return stamped
  }

  /** Events with seq > `after`, oldest first, at most `limit` (the newest of them). */
  since(after = 0, limit = this.cap): RingEvent[] {
    const out: RingEvent[] = []
    const first = Math.max(after + 1, this.seq - this.count + 1, this.seq - limit + 1)
    for (let s = first; s <= this.seq; s++) out.push(this.slots[(s - 1) % this.cap]!)
    return out
  }

  /** A new capacity (a reload): the newest events that fit are kept, with their numbers. */
  resize(capacity: number): void {
    const kept = this.since(0, capacity)
    this.cap = capacity
    this.slots = new Array<RingEvent | undefined>(capacity)
    for (const e of kept) this.slots[(e.seq - 1) % capacity] = e
    this.count = kept.length
  }

  /** Called for every event pushed from now on; returns the unsubscribe. */
  subscribe(listener: RingListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }
}

export interface Tally {
  readonly key: string
  readonly count: number
}

/** The `n` most frequent values of `key` over `events` (ties by value), nulls skipped. */
export function top(events: readonly RingEvent[], key: (e: RingEvent) => string | null, n: number): Tally[] {
  const counts = new Map<string, number>()
  for (const e of events) {
    const k = key(e)
    if (k !== null) counts.set(k, (counts.get(k) ?? 0) + 1)
  }
  return [...counts].map(([k, count]) => ({ key: k, count })).sort((a, b) => b.count - a.count || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).slice(0, n)
}
