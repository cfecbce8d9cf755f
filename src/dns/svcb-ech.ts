/**
 * Removing the `ech` SvcParam (key 5, RFC 9460 §7.3 / RFC 9848) from the HTTPS (65) and
 * SVCB (64) records of an answer (`dns.ech: strip`). Pure: no sockets, clocks or metrics.
 *
 * Why: with `ech` a client sends a ClientHello whose outer SNI is the provider's shared
 * public name, which the SNI proxy must judge (and mostly blocks): the allowed name would
 * be unreachable. Without it the client connects with the real name in the SNI, as a
 * client that does not support ECH does.
 *
 * What changes, and nothing else (every other byte is copied unchanged):
 * - an `ech` param is cut out of its record and that record's RDLENGTH lowered;
 * - a record whose `mandatory` list names `ech` is removed whole, with its section count:
 *   such a record may only be used with ECH (RFC 9460 §8), so a client without ECH
 *   ignores it, and stripping makes every client one without ECH;
 * - an RRSIG in the same section with the same owner that covers a rewritten RRset's type
 *   is removed: it can no longer verify (see docs/design.md, "ECH", for DNSSEC);
 * - compression pointers located after the first cut whose target lies after a cut are
 *   lowered by the bytes cut before their target. Pointers live in owner names and in the
 *   RDATA names of the types RFC 3597 §4 lets a receiver decompress (listed in
 *   `rdataNames`); every other RDATA is opaque, as it is to a conforming receiver.
 *
 * Every HTTPS/SVCB record is checked against RFC 9460 §2.2 (params inside the RDATA,
 * keys strictly increasing, so no duplicates; not key 65535, the reserved "Invalid key";
 * a `mandatory` of whole keys), whether it carries `ech` or not: in strip mode the gateway
 * relays only HTTPS/SVCB data it has fully read. A record that fails, an answer whose
 * lengths or names do not parse, or a rewrite that cannot keep every pointer right
 * (one pointing into removed bytes, or reaching a pointer this walk did not see) gives
 * STRIP_MALFORMED and no output: the caller answers SERVFAIL, never a half-rewritten
 * message.
 *
 * Cost: every loop steps forward through the message (names: strictly backward pointers
 * only), so O(length); no allocation unless the answer is rewritten (module scratch).
 * Measured in bench/svcb-ech.ts, see bench/RESULTS.md.
 */

import { HEADER_LEN } from './wire.js'

export const STRIP_UNCHANGED = 0
export const STRIP_REWRITTEN = 1
export const STRIP_MALFORMED = 2

const TYPE_SVCB = 64
const TYPE_HTTPS = 65
const TYPE_RRSIG = 46
const KEY_MANDATORY = 0
export const KEY_ECH = 5
const KEY_INVALID = 65535

/** What `stripEch` did; one instance reused by its caller. */
export class EchStrip {
  /** The rewritten message (STRIP_REWRITTEN only). */
  out: Buffer | null = null
  /** `ech` params cut from records that stay. */
  params = 0
  /** Records removed because their `mandatory` list names `ech`. */
  records = 0
  /** RRSIGs removed because they covered a rewritten RRset. */
  signatures = 0
  /** Why STRIP_MALFORMED (for logs and tests). */
  reason = ''

  reset(): void {
    this.out = null
    this.params = 0
    this.records = 0
    this.signatures = 0
    this.reason = ''
  }
}

// Module scratch: the walk is synchronous, so one set serves every call.
/** Positions of every compression pointer met in a name this walk parsed, increasing. */
let ptrs = new Int32Array(256)
let nPtrs = 0
/**
 * Cut ranges as (start, end) pairs, sorted before the build; RDLENGTH fields to lower as
 * (position, new value); rewritten RRsets as (section, owner offset, type); RRSIGs seen as
 * (section, owner offset, covered type, start, end). Typed arrays with counts: resetting
 * four plain arrays' `length` cost ~150 ns a call (CPU profile), more than the walk.
 */
let cuts = new Int32Array(32)
let nCuts = 0
let rdlens = new Int32Array(32)
let nRdlens = 0
let rewritten = new Int32Array(48)
let nRewritten = 0
let sigs = new Int32Array(80)
let nSigs = 0
const counts = new Int32Array(3)
const removed = new Int32Array(3)

function grow(a: Int32Array<ArrayBuffer>, need: number): Int32Array<ArrayBuffer> {
  if (need <= a.length) return a
  const bigger = new Int32Array(Math.max(need, a.length * 2))
  bigger.set(a)
  return bigger
}

function pushCut(start: number, end: number): void {
  cuts = grow(cuts, nCuts + 2)
  cuts[nCuts++] = start
  cuts[nCuts++] = end
}

function pushRewritten(section: number, owner: number, type: number): void {
  rewritten = grow(rewritten, nRewritten + 3)
  rewritten[nRewritten++] = section
  rewritten[nRewritten++] = owner
  rewritten[nRewritten++] = type
}

function addPtr(pos: number): void {
  if (nPtrs === ptrs.length) {
    const bigger = new Int32Array(ptrs.length * 2)
    bigger.set(ptrs)
    ptrs = bigger
  }
  ptrs[nPtrs++] = pos
}

/**
 * Offset past the name at `off` (its in-place part ends by `limit`), recording where its
 * pointer is, or -1. The in-place part only: the target is checked when a rewrite needs it.
 */
function walkName(buf: Uint8Array, off: number, limit: number): number {
  let total = 0
  for (;;) {
    if (off >= limit) return -1
    const l = buf[off]!
    if (l === 0) return off + 1
    if ((l & 0xc0) === 0xc0) {
      if (off + 2 > limit) return -1
      addPtr(off)
      return off + 2
    }
    if (l > 63) return -1
    total += l + 1
    if (total > 254) return -1
    off += l + 1
  }
}

/**
 * Walks the names inside RDATA [p, end) of the types RFC 3597 §4 lets a receiver
 * decompress (RFC 1035 types, RP, AFSDB, RT, SIG, PX, NXT, NAPTR, SRV, KX) plus DNAME
 * and the SVCB target (which must not be compressed, but is walked so a pointer there
 * stays right). True when the RDATA is not one of these or its names parse.
 */
function rdataNames(buf: Uint8Array, type: number, p: number, end: number): boolean {
  switch (type) {
    case 2: case 3: case 4: case 5: case 7: case 8: case 9: case 12: case 39: // NS MD MF CNAME MB MG MR PTR DNAME
      return walkName(buf, p, end) === end
    case 6: { // SOA
      const q = walkName(buf, p, end)
      const r = q < 0 ? -1 : walkName(buf, q, end)
      return r >= 0 && r + 20 === end
    }
    case 14: case 17: { // MINFO, RP: two names
      const q = walkName(buf, p, end)
      return q >= 0 && walkName(buf, q, end) === end
    }
    case 15: case 18: case 21: case 36: // MX AFSDB RT KX
      return p + 2 < end && walkName(buf, p + 2, end) === end
    case 26: { // PX
      const q = p + 2 < end ? walkName(buf, p + 2, end) : -1
      return q >= 0 && walkName(buf, q, end) === end
    }
    case 33: // SRV
      return p + 6 < end && walkName(buf, p + 6, end) === end
    case 24: // SIG: 18 fixed bytes, signer, signature
      return p + 18 < end && walkName(buf, p + 18, end) >= 0
    case 30: // NXT: next name, bitmap
      return walkName(buf, p, end) >= 0
    case 35: { // NAPTR: order, preference, three strings, replacement
      let q = p + 4
      for (let i = 0; i < 3; i++) {
        if (q >= end) return false
        q += 1 + buf[q]!
      }
      return q < end && walkName(buf, q, end) === end
    }
    default:
      return true
  }
}

/** Case-insensitive equality of the names at `a` and `b`, following pointers (strictly backward only). */
function sameName(buf: Uint8Array, a: number, b: number, len: number): boolean {
  for (let steps = 0; steps < len; steps++) {
    let la = buf[a]!
    while ((la & 0xc0) === 0xc0) {
      const t = ((la & 0x3f) << 8) | buf[a + 1]!
      if (t >= a) return false
      a = t
      la = buf[a]!
    }
    let lb = buf[b]!
    while ((lb & 0xc0) === 0xc0) {
      const t = ((lb & 0x3f) << 8) | buf[b + 1]!
      if (t >= b) return false
      b = t
      lb = buf[b]!
    }
    if (la !== lb || a + la >= len || b + lb >= len) return false
    if (la === 0) return true
    for (let i = 1; i <= la; i++) {
      let x = buf[a + i]!
      let y = buf[b + i]!
      if (x >= 0x41 && x <= 0x5a) x |= 0x20
      if (y >= 0x41 && y <= 0x5a) y |= 0x20
      if (x !== y) return false
    }
    a += la + 1
    b += lb + 1
  }
  return false
}

/** Bytes cut before `pos` (cuts sorted, disjoint). */
function cutBefore(pos: number): number {
  let n = 0
  for (let i = 0; i < nCuts; i += 2) {
    if (cuts[i]! >= pos) break
    n += Math.min(cuts[i + 1]!, pos) - cuts[i]!
  }
  return n
}

function inCut(pos: number): boolean {
  for (let i = 0; i < nCuts; i += 2) if (pos >= cuts[i]! && pos < cuts[i + 1]!) return true
  return false
}

function recordedPtr(pos: number): boolean {
  let lo = 0
  let hi = nPtrs - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const v = ptrs[mid]!
    if (v === pos) return true
    if (v < pos) lo = mid + 1
    else hi = mid - 1
  }
  return false
}

/**
 * The name read from a pointer's target must decode to the same labels after the rewrite:
 * no byte of it cut, and every pointer on its way either before the first cut (its bytes
 * unchanged) or one this walk recorded (rewritten itself). The whole chain is followed,
 * pointers strictly backward, at most 255 name bytes and 128 hops (hostile input may
 * aim a pointer at bytes that were never a name).
 */
function chainSafe(buf: Uint8Array, t: number, firstCut: number, len: number): boolean {
  let off = t
  let total = 0
  for (let hops = 0; hops < 128; ) {
    if (off >= len) return false
    const l = buf[off]!
    if ((l & 0xc0) === 0xc0) {
      if (off + 1 >= len) return false
      if (off + 1 >= firstCut && (inCut(off) || inCut(off + 1) || !recordedPtr(off))) return false
      const next = ((l & 0x3f) << 8) | buf[off + 1]!
      if (next >= off) return false
      off = next
      hops++
      continue
    }
    if (l > 63) return false
    total += l + 1
    if (total > 255 || off + l >= len) return false
    if (off + l >= firstCut) for (let i = off; i <= off + l; i++) if (inCut(i)) return false
    if (l === 0) return true
    off += l + 1
  }
  return false
}

function fail(r: EchStrip, reason: string): number {
  r.reason = reason
  return STRIP_MALFORMED
}

/**
 * Removes every `ech` param from the HTTPS/SVCB records of the message `buf[0, len)`.
 * Returns STRIP_UNCHANGED (no `ech` anywhere; `r.out` null), STRIP_REWRITTEN (`r.out` the
 * new message) or STRIP_MALFORMED (`r.reason` says why; the caller must not relay it).
 */
export function stripEch(buf: Uint8Array, len: number, r: EchStrip): number {
  r.reset()
  nPtrs = 0
  nCuts = 0
  nRdlens = 0
  nRewritten = 0
  nSigs = 0
  if (len < HEADER_LEN || len > buf.length) return fail(r, 'short')
  counts[0] = (buf[6]! << 8) | buf[7]!
  counts[1] = (buf[8]! << 8) | buf[9]!
  counts[2] = (buf[10]! << 8) | buf[11]!
  removed.fill(0)
  const qd = (buf[4]! << 8) | buf[5]!
  let off = HEADER_LEN
  for (let i = 0; i < qd; i++) {
    off = walkName(buf, off, len)
    if (off < 0 || off + 4 > len) return fail(r, 'question')
    off += 4
  }
  for (let section = 0; section < 3; section++) {
    for (let i = 0; i < counts[section]!; i++) {
      const rr = off
      off = walkName(buf, off, len)
      if (off < 0 || off + 10 > len) return fail(r, 'record')
      const type = (buf[off]! << 8) | buf[off + 1]!
      const rdlen = (buf[off + 8]! << 8) | buf[off + 9]!
      const rdata = off + 10
      const end = rdata + rdlen
      if (end > len) return fail(r, 'rdlength')
      if (type === TYPE_SVCB || type === TYPE_HTTPS) {
        if (rdlen < 3) return fail(r, 'svcb_short')
        let p = walkName(buf, rdata + 2, end)
        if (p < 0) return fail(r, 'svcb_target')
        let prev = -1
        let echStart = -1
        let echEnd = -1
        let mandatoryEch = false
        while (p < end) {
          if (p + 4 > end) return fail(r, 'svcparam_truncated')
          const key = (buf[p]! << 8) | buf[p + 1]!
          const vlen = (buf[p + 2]! << 8) | buf[p + 3]!
          const next = p + 4 + vlen
          if (next > end) return fail(r, 'svcparam_length')
          if (key <= prev) return fail(r, 'svcparam_order')
          if (key === KEY_INVALID) return fail(r, 'svcparam_key65535')
          if (key === KEY_MANDATORY) {
            if (vlen === 0 || (vlen & 1) !== 0) return fail(r, 'mandatory')
            for (let k = p + 4; k < next; k += 2) if (buf[k] === 0 && buf[k + 1] === KEY_ECH) mandatoryEch = true
          } else if (key === KEY_ECH) {
            echStart = p
            echEnd = next
          }
          prev = key
          p = next
        }
        if (mandatoryEch) {
          pushCut(rr, end)
          removed[section]!++
          r.records++
          pushRewritten(section, rr, type)
        } else if (echStart >= 0) {
          pushCut(echStart, echEnd)
          rdlens = grow(rdlens, nRdlens + 2)
          rdlens[nRdlens++] = off + 8
          rdlens[nRdlens++] = rdlen - (echEnd - echStart)
          r.params++
          pushRewritten(section, rr, type)
        }
      } else if (type === TYPE_RRSIG) {
        if (rdlen < 18) return fail(r, 'rrsig_short')
        sigs = grow(sigs, nSigs + 5)
        sigs[nSigs++] = section
        sigs[nSigs++] = rr
        sigs[nSigs++] = (buf[rdata]! << 8) | buf[rdata + 1]!
        sigs[nSigs++] = rr
        sigs[nSigs++] = end
      } else if (!rdataNames(buf, type, rdata, end)) {
        return fail(r, 'rdata_name')
      }
      off = end
    }
  }
  if (nCuts === 0) return STRIP_UNCHANGED
  for (let s = 0; s < nSigs; s += 5) {
    for (let w = 0; w < nRewritten; w += 3) {
      if (sigs[s] === rewritten[w] && sigs[s + 2] === rewritten[w + 2] && sameName(buf, sigs[s + 1]!, rewritten[w + 1]!, len)) {
        pushCut(sigs[s + 3]!, sigs[s + 4]!)
        removed[sigs[s]!]!++
        r.signatures++
        break
      }
    }
  }
  sortPairs(cuts, nCuts)
  const firstCut = cuts[0]!
  // Every pointer that stays, wherever it is: one before the first cut may still aim at
  // bytes that run into a cut (hostile input; scanAnswer only bounds the name's length).
  for (let i = 0; i < nPtrs; i++) {
    const pos = ptrs[i]!
    if (inCut(pos)) continue
    if (!chainSafe(buf, pos, firstCut, len)) return fail(r, 'pointer_into_cut')
  }
  let cutTotal = 0
  for (let i = 0; i < nCuts; i += 2) cutTotal += cuts[i + 1]! - cuts[i]!
  const out = Buffer.allocUnsafe(len - cutTotal)
  let w = 0
  let from = 0
  for (let i = 0; i < nCuts; i += 2) {
    out.set(buf.subarray(from, cuts[i]!), w)
    w += cuts[i]! - from
    from = cuts[i + 1]!
  }
  out.set(buf.subarray(from, len), w)
  for (let s = 0; s < 3; s++) {
    const n = counts[s]! - removed[s]!
    out[6 + 2 * s] = n >> 8
    out[7 + 2 * s] = n & 0xff
  }
  for (let i = 0; i < nRdlens; i += 2) {
    const at = rdlens[i]!
    if (inCut(at)) continue
    const o = at - cutBefore(at)
    out[o] = rdlens[i + 1]! >> 8
    out[o + 1] = rdlens[i + 1]! & 0xff
  }
  for (let i = 0; i < nPtrs; i++) {
    const pos = ptrs[i]!
    if (pos < firstCut || inCut(pos)) continue
    const t = ((buf[pos]! & 0x3f) << 8) | buf[pos + 1]!
    const nt = t - cutBefore(t)
    const o = pos - cutBefore(pos)
    out[o] = 0xc0 | (nt >> 8)
    out[o + 1] = nt & 0xff
  }
  r.out = out
  return STRIP_REWRITTEN
}

/** Insertion sort of (start, end) pairs by start: a handful per answer. */
function sortPairs(a: Int32Array, n: number): void {
  for (let i = 2; i < n; i += 2) {
    const s = a[i]!
    const e = a[i + 1]!
    let j = i - 2
    while (j >= 0 && a[j]! > s) {
      a[j + 2] = a[j]!
      a[j + 3] = a[j + 1]!
      j -= 2
    }
    a[j + 2] = s
    a[j + 3] = e
  }
}

/**
 * Whether a stored answer holds an HTTPS or SVCB record, read from its RRs' TTL offsets
 * (the type is the 4 bytes before each TTL): a few ns, so answers without any (A, AAAA,
 * …) skip `stripEch` entirely.
 */
export function hasServiceRecord(wire: Uint8Array, ttlOffsets: Uint16Array): boolean {
  for (let i = 0; i < ttlOffsets.length; i++) {
    const p = ttlOffsets[i]!
    if (wire[p - 4] === 0) {
      const t = wire[p - 3]
      if (t === TYPE_SVCB || t === TYPE_HTTPS) return true
    }
  }
  return false
}
