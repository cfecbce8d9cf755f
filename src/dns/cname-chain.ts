/**
 * The alias chain of an answer: the names a client reaches from the question's name
 * through the CNAME and DNAME records of the answer section. Each must pass the policy
 * (`dns.cname_targets: follow_policy`), as Blocky and AdGuard Home check CNAME targets:
 * otherwise an allowed name that aliases a blocked one would hand out the blocked
 * name's addresses. Pure; runs once per upstream answer that holds an alias (miss path).
 *
 * Targets come back as uncompressed, lowercased wire names, so the policy judges the
 * exact labels (a label holding a `.` stays one label and matches nothing).
 */
import { HEADER_LEN, skipName, TYPE_CNAME, TYPE_DNAME } from './wire.js'

/** At most this many links are followed; longer chains stop there (BIND and unbound stop near 8–16 too). */
export const MAX_ALIAS_HOPS = 8
const MAX_POINTER_HOPS = 64

/** Shared empty result: most answers hold no alias. */
export const NO_ALIASES: readonly Buffer[] = Object.freeze([]) as readonly Buffer[]

/** The name at `off` as uncompressed lowercase wire bytes, or null when malformed. */
export function wireName(buf: Uint8Array, off: number, len: number): Buffer | null {
  const out: number[] = []
  let hops = 0
  for (;;) {
    if (off >= len) return null
    const l = buf[off]!
    if (l === 0) {
      out.push(0)
      return out.length > 255 ? null : Buffer.from(out)
    }
    if ((l & 0xc0) === 0xc0) {
      if (off + 1 >= len || ++hops > MAX_POINTER_HOPS) return null
      off = ((l & 0x3f) << 8) | buf[off + 1]!
      continue
    }
    if (l > 63 || off + 1 + l > len) return null
    out.push(l)
    for (let i = off + 1; i <= off + l; i++) {
      const c = buf[i]!
      out.push(c >= 0x41 && c <= 0x5a ? c | 0x20 : c)
    }
    if (out.length > 255) return null
    off += l + 1
  }
}

/** Offset in `name` where `suffix` starts as whole labels, -1 when it is not a proper suffix. */
function suffixAt(name: Buffer, suffix: Buffer): number {
  let off = 0
  while (name[off] !== 0) {
    off += name[off]! + 1
    if (name.length - off === suffix.length && name.subarray(off).equals(suffix)) return off
  }
  return -1
}

/**
 * The alias targets of the question's name in an upstream answer, in chain order
 * (empty when the answer has no CNAME/DNAME for it); null when a name is malformed.
 * A DNAME (RFC 6672) whose owner is a proper suffix of the current name substitutes it,
 * whether or not the upstream also sent the synthesized CNAME.
 */
export function aliasTargets(buf: Uint8Array, len: number, maxHops = MAX_ALIAS_HOPS): Buffer[] | null {
  let current = wireName(buf, HEADER_LEN, len)
  if (current === null) return null
  const an = (buf[6]! << 8) | buf[7]!
  let off = skipName(buf, HEADER_LEN, len)
  if (off < 0) return null
  off += 4
  const rrs: { owner: Buffer; type: number; rdata: number }[] = []
  for (let i = 0; i < an; i++) {
    const ownerAt = off
    off = skipName(buf, off, len)
    if (off < 0 || off + 10 > len) return null
    const type = (buf[off]! << 8) | buf[off + 1]!
    const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!
    if (type === TYPE_CNAME || type === TYPE_DNAME) {
      const owner = wireName(buf, ownerAt, len)
      if (owner === null) return null
      rrs.push({ owner, type, rdata: off + 10 })
    }
    off += 10 + rdlen
    if (off > len) return null
  }
  if (rrs.length === 0) return []
  const out: Buffer[] = []
  for (let hop = 0; hop < maxHops; hop++) {
    let next: Buffer | null = null
    const cname = rrs.find((r) => r.type === TYPE_CNAME && r.owner.equals(current!))
    if (cname !== undefined) next = wireName(buf, cname.rdata, len)
    else {
      for (const r of rrs) {
        if (r.type !== TYPE_DNAME) continue
        const at = suffixAt(current, r.owner)
        if (at < 0) continue
        const target = wireName(buf, r.rdata, len)
        if (target === null) return null
        const substituted = Buffer.concat([current.subarray(0, at), target])
        next = substituted.length > 255 ? null : substituted
        break
      }
      if (next === null) break
    }
    if (next === null) return null
    if (out.some((n) => n.equals(next!)) || next.equals(current)) break
    out.push(next)
    current = next
  }
  return out
}
