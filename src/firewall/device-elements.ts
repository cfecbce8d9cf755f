/**
 * Scope `device`: which elements each device holds in the kernel, in write order, and
 * which one goes when a bound is reached. Pure: no I/O, no clock of its own; the sink
 * turns a victim into a `delete element` in its next batch.
 *
 * Unlike the dedupe map of scope `shared` (forgetting an element there is harmless: it
 * is written again), forgetting here would let the kernel hold elements the bounds no
 * longer count, so every element this book drops while it is still alive is deleted
 * from the kernel too.
 */

/** What the sink last wrote (or is writing) for one element of one device. */
export interface DeviceElement {
  /** When the element expires in the kernel, ms. */
  expiresAt: number
  /** The batch writing it, until that batch ends; then null. Opaque here. */
  batch: object | null
  /** Its index in that batch's key list. */
  index: number
  /** Which set: allow4_dev or allow6_dev. */
  readonly v4: boolean
}

export type Bound = 'device' | 'total'

export interface Victim {
  readonly client: string
  readonly key: string
  readonly element: DeviceElement
  readonly bound: Bound
}

export class DeviceElements {
  /** client → key → element; each inner Map's insertion order is write order. */
  private readonly devices = new Map<string, Map<string, DeviceElement>>()
  private count = 0

  constructor(
    public perDevice: number,
    public total: number,
  ) {}

  /** Elements held, all devices together (expired ones not yet dropped included). */
  get size(): number {
    return this.count
  }

  get deviceCount(): number {
    return this.devices.size
  }

  /** Elements held by one device. */
  sizeOf(client: string): number {
    return this.devices.get(client)?.size ?? 0
  }

  get(client: string, key: string): DeviceElement | undefined {
    return this.devices.get(client)?.get(key)
  }

  /** Stores or re-stores an element at the young end of its device's order. */
  set(client: string, key: string, e: DeviceElement): void {
    let dev = this.devices.get(client)
    if (dev === undefined) this.devices.set(client, (dev = new Map()))
    if (dev.delete(key)) this.count--
    dev.set(key, e)
    this.count++
  }

  delete(client: string, key: string): void {
    const dev = this.devices.get(client)
    if (dev === undefined || !dev.delete(key)) return
    this.count--
    if (dev.size === 0) this.devices.delete(client)
  }

  /**
   * Drops the device's oldest elements while they have expired (the kernel dropped
   * them already; nothing to delete). Elements expire roughly in write order, so the
   * head is where dead ones gather; this keeps the book near the kernel's truth at
   * the cost of a look at one or two entries per answer.
   */
  dropExpired(client: string, now: number): void {
    const dev = this.devices.get(client)
    if (dev === undefined) return
    for (const [key, e] of dev) {
      if (e.expiresAt > now || e.batch !== null) break
      dev.delete(key)
      this.count--
    }
    if (dev.size === 0) this.devices.delete(client)
  }

  /**
   * The element to delete so that `client` can hold one more, or null when there is
   * room. Per device: that device's oldest. In total: the oldest element of the device
   * holding the most, so that no device can push another below the largest one's
   * share (a device flooding names loses its own elements first). Expired heads are
   * dropped on the way, without a victim. The caller deletes the victim (`delete`) and
   * from the kernel.
   */
  victim(client: string, now: number): Victim | null {
    this.dropExpired(client, now)
    const own = this.devices.get(client)
    if (own !== undefined && own.size >= this.perDevice) return this.head(client, own, 'device')
    if (this.count < this.total) return null
    let largest: string | null = null
    let most = 0
    for (const [c, dev] of this.devices) {
      if (dev.size > most) {
        most = dev.size
        largest = c
      }
    }
    if (largest === null) return null
    this.dropExpired(largest, now)
    if (this.count < this.total) return null
    const dev = this.devices.get(largest)
    return dev === undefined ? null : this.head(largest, dev, 'total')
  }

  /** Every element, for the sink's release after a batch and for tests. */
  *entries(): IterableIterator<[client: string, key: string, element: DeviceElement]> {
    for (const [client, dev] of this.devices) for (const [key, e] of dev) yield [client, key, e]
  }

  private head(client: string, dev: Map<string, DeviceElement>, bound: Bound): Victim | null {
    const first = dev.entries().next()
    if (first.done) return null
    return { client, key: first.value[0], element: first.value[1], bound }
  }
}
