/**
 * `npm run bench -- svcb-ech [--iterations N] [--rounds N]`: what `dns.ech: strip` costs
 * per answer (src/dns/svcb-ech.ts), beside the relay's own per-answer work in the same run.
 *
 * The answers are nsd's (4.6.1, captured from 127.0.0.1): a Cloudflare-shaped HTTPS
 * record (alpn h3,h2, two ipv4hints, ech of 70 bytes, two ipv6hints) with the NS in the
 * authority and its A in the additional section, whose owner points past the HTTPS
 * record (so the rewrite moves a pointer); and the same record without ech.
 *
 * Rows (ns per answer, median of the rounds):
 *   strip            stripEch on the answer with ech (the rewrite itself)
 *   strip+repack     + scanAnswer + packAnswer of the result: the handler's whole work on
 *                    the first answer (later hits serve the stored stripped copy)
 *   check, no ech    stripEch on the answer without ech: what every HTTPS answer served in
 *                    strip mode pays (cache hits included)
 *   hasServiceRecord the pre-check on an A answer (every other answer pays only this)
 *   relay: render    renderAnswer of the same answer (every hit pays it): the baseline
 *   relay: scan      scanAnswer of the same answer (every miss pays it): the baseline
 *   relay: scan+pack scanAnswer + packAnswer (every miss pays both; packAnswer's one exact
 *                    ArrayBuffer is most of it): strip+repack = strip + this, once more
 * Every loop checks its result; a wrong one exits 1.
 */
import { packAnswer } from '../src/dns/cache.js'
import { EchStrip, hasServiceRecord, stripEch, STRIP_REWRITTEN, STRIP_UNCHANGED } from '../src/dns/svcb-ech.js'
import { parseQuery, QueryInfo, renderAnswer, scanAnswer } from '../src/dns/wire.js'

const WITH_ECH = Buffer.from(
  '000184000001000100010001037777770365636804746573740000410001c00c004100010000012c00870001000001000602683302683200040008681084e5681085e5000500460045fe0d00410100200020d9a3fe20209f45068442f185d177e4a2b57461e46d73cb12eff3a8f85c6fa33d00040001000100116563682e6b65696a69303530312e636f6d000000060020260647000000000000000000681084e5260647000000000000000000681085e5c010000200010000012c0005026e73c010c0bd000100010000012c00045db8d823',
  'hex',
)
const WITHOUT_ECH = Buffer.from(
  '00028400000100010001000105706c61696e0365636804746573740000410001c00c004100010000012c003d0001000001000602683302683200040008681084e5681085e500060020260647000000000000000000681084e5260647000000000000000000681085e5c012000200010000012c0005026e73c012c075000100010000012c00045db8d823',
  'hex',
)
/** An A answer of the same shape (NS + glue) for the pre-check row. */
const A_ANSWER = Buffer.from('000184000001000100010001037777770365636804746573740000010001c00c000100010000012c00045db8d822c010000200010000012c0005026e73c010c03a000100010000012c00045db8d823', 'hex')

function fail(msg: string): never {
  process.stderr.write(`svcb-ech bench: ${msg}\n`)
  process.exit(1)
}

function option(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}

/** ns per call of `fn`, median over `rounds` of `n` calls; `fn` returns false on a wrong result. */
function measure(n: number, rounds: number, fn: () => boolean): number {
  for (let i = 0; i < Math.min(n, 20_000); i++) if (!fn()) fail('wrong result in warm-up')
  const per: number[] = []
  for (let r = 0; r < rounds; r++) {
    let ok = true
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) ok = fn() && ok
    const t1 = process.hrtime.bigint()
    if (!ok) fail('wrong result')
    per.push(Number(t1 - t0) / n)
  }
  per.sort((a, b) => a - b)
  return per[Math.floor(per.length / 2)]!
}

export async function run(args: string[]): Promise<void> {
  const n = option(args, '--iterations', 200_000)
  const rounds = option(args, '--rounds', 7)
  const r = new EchStrip()
  const expectLen = WITH_ECH.length - (4 + 70)
  // The answer as the cache stores it (no OPT here), and a client query for render.
  const scanned = scanAnswer(WITH_ECH, WITH_ECH.length)
  if (scanned === null) fail('fixture does not scan')
  const stored = packAnswer(WITH_ECH, scanned)
  const q = Buffer.from(WITH_ECH.subarray(0, 30))
  q[2] = 0x01
  q[3] = 0
  q.fill(0, 6, 12)
  q[5] = 1
  const info = new QueryInfo()
  if (parseQuery(q, q.length, info) !== 0) fail('query fixture')
  const aScan = scanAnswer(A_ANSWER, A_ANSWER.length)
  if (aScan === null) fail('A fixture does not scan')
  const aStored = packAnswer(A_ANSWER, aScan)

  const rows: [string, number][] = [
    ['strip', measure(n, rounds, () => stripEch(WITH_ECH, WITH_ECH.length, r) === STRIP_REWRITTEN && r.out!.length === expectLen)],
    [
      'strip+repack',
      measure(n, rounds, () => {
        if (stripEch(WITH_ECH, WITH_ECH.length, r) !== STRIP_REWRITTEN) return false
        const s = scanAnswer(r.out!, r.out!.length)
        return s !== null && packAnswer(r.out!, s).wire.length === expectLen
      }),
    ],
    ['check, no ech', measure(n, rounds, () => stripEch(WITHOUT_ECH, WITHOUT_ECH.length, r) === STRIP_UNCHANGED)],
    ['hasServiceRecord (A answer)', measure(n, rounds, () => !hasServiceRecord(aStored.wire, aStored.ttlOffsets))],
    ['relay: renderAnswer (hit)', measure(n, rounds, () => renderAnswer(stored.wire, stored.ttlOffsets, stored.ttls, q, info, 1, 65535).length === WITH_ECH.length)],
    ['relay: scanAnswer (miss)', measure(n, rounds, () => scanAnswer(WITH_ECH, WITH_ECH.length) !== null)],
    [
      'relay: scan+pack (miss)',
      measure(n, rounds, () => {
        const s = scanAnswer(WITH_ECH, WITH_ECH.length)
        return s !== null && packAnswer(WITH_ECH, s).wire.length === WITH_ECH.length
      }),
    ],
  ]
  for (const [name, ns] of rows) process.stdout.write(JSON.stringify({ bench: 'svcb-ech', case: name, ns_per_answer: Math.round(ns) }) + '\n')
  process.stdout.write(`\n${'case'.padEnd(30)} ns/answer\n`)
  for (const [name, ns] of rows) process.stdout.write(`${name.padEnd(30)} ${ns.toFixed(0).padStart(9)}\n`)
  const strip = rows[0]![1]
  const repack = rows[1]![1]
  process.stdout.write(`\nbar: strip < 2000 ns per answer: ${strip < 2000 ? 'met' : 'NOT met'} (${strip.toFixed(0)} ns; with the re-pack into the cache layout ${repack.toFixed(0)} ns)\n`)
}
