/**
 * "10 000 distinct allowed answers per second keep the sets correct."
 *
 * Inside a network namespace of its own, feeds the nftables sink distinct addresses at
 * a target rate for a bounded time (default 10 000/s for 3 s), as separate `add()` calls
 * like separate DNS answers (10 % IPv6, 20 % with a second port 123/udp), and measures
 * batches/s, elements/s and add→applied latency (the time a DNS answer waits). Then it
 * lists both sets with `nft -j` and checks that every element is there with timeout
 * TTL + grace. Baseline in the same run: one `nft` process per element (no batching),
 * for a small count. A last group replays every answer as a cache hit and measures the
 * dedupe path (no nft run expected).
 *
 *   npx tsc -p tsconfig.bench.json && node --expose-gc build/bench/run.js firewall [rate] [seconds]
 *
 * Needs root, `ip` and `nft`; prints a skip line otherwise.
 */
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { NftablesSink, SpawnNftRunner } from '../src/firewall/nftables-sink.js'
import { batchScript, declareScript } from '../src/firewall/nft-script.js'
import type { Rule } from '../src/policy/types.js'
import { canRun, counterValue, execFileP, GRACE, percentile, R443, R443_123, round } from './firewall/common.js'

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'firewall', ...o }) + '\n')
}

/** Answer i: a distinct address, 1 in 10 IPv6, 1 in 5 with two ports, TTLs 30…329 s. */
function answer(i: number): { address: string; family: 4 | 6; ttl: number; rule: Rule } {
  const ttl = 30 + (i % 300)
  const r = i % 5 === 0 ? R443_123 : R443
  if (i % 10 === 3) return { address: `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`, family: 6, ttl, rule: r }
  return { address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, family: 4, ttl, rule: r }
}

function keysOf(i: number): string[] {
  const a = answer(i)
  return a.rule.ports.map((p) => `${a.address} . ${p.proto} . ${p.port}`)
}

export async function run(args: string[]): Promise<void> {
  const rate = Math.min(50_000, Math.max(100, Number(args[0] ?? 10_000)))
  const seconds = Math.min(10, Math.max(0.5, Number(args[1] ?? 3)))
  const baselineCount = 200
  const why = await canRun()
  if (why !== null) {
    emit({ skipped: why })
    process.stdout.write(`firewall benchmark skipped: ${why}\n`)
    return
  }
  const ns = `egressd-bench-${process.pid}`
  await execFileP('ip', ['netns', 'add', ns])
  const cleanup = () => execFileP('ip', ['netns', 'del', ns]).catch(() => {})
  const onSignal = () => void cleanup().then(() => process.exit(130))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    const runner = new SpawnNftRunner({ command: ['ip', 'netns', 'exec', ns, 'nft'], timeoutMs: 30_000 })
    await runner.run(declareScript('egressd'))

    // --- baseline: one nft process per element -------------------------------------
    const b0 = process.hrtime.bigint()
    for (let i = 0; i < baselineCount; i++) {
      const a = answer(1_000_000 + i * 10) // IPv4, one port
      await runner.run(batchScript('egressd', { keys: [`${a.address} . tcp . 443`], timeouts: [a.ttl + GRACE] }, { keys: [], timeouts: [] }, false))
    }
    const baseSeconds = Number(process.hrtime.bigint() - b0) / 1e9
    const baseline = { group: 'unbatched', elements: baselineCount, seconds: round(baseSeconds), elements_per_s: Math.round(baselineCount / baseSeconds), p50_ms: round((baseSeconds / baselineCount) * 1000) }
    emit(baseline)

    // --- batched: the sink at the target rate ----------------------------------------
    const registry = new Registry()
    const sink = new NftablesSink({ enabled: true, table: 'egressd', graceSeconds: GRACE, scope: 'shared', deviceKey: 'address' as const, maxElementsPerDevice: 1024, maxElements: 1 << 20 }, { log: pino({ level: 'warn' }), registry, runner, maxKnown: 1 << 20, maxPending: 1 << 16 })
    await sink.start()
    const total = Math.round(rate * seconds)
    const started = new Float64Array(total)
    const latency = new Float64Array(total)
    let issued = 0
    let done = 0
    const t0 = performance.now()
    const pending: Promise<void>[] = []
    await new Promise<void>((resolveFeed) => {
      const feed = () => {
        const elapsed = (performance.now() - t0) / 1000
        const target = Math.min(total, Math.floor(rate * elapsed))
        while (issued < target) {
          const i = issued++
          const a = answer(i)
          started[i] = performance.now()
          pending.push(
            sink.add(a.rule.pattern, a.rule, [{ address: a.address, family: a.family, ttl: a.ttl }]).then(() => {
              latency[i] = performance.now() - started[i]!
              done++
            }),
          )
        }
        if (issued >= total || elapsed > seconds * 2) resolveFeed()
        else setTimeout(feed, 2)
      }
      feed()
    })
    const feedSeconds = (performance.now() - t0) / 1000
    // Bounded drain: everything issued must be applied well within this.
    await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, 20_000))])
    const wallSeconds = (performance.now() - t0) / 1000
    if (done !== issued) throw new Error(`only ${done} of ${issued} adds settled within the drain limit`)
    const batches = await counterValue(registry, 'egressd_firewall_batches_total', { result: 'applied' })
    const failed = await counterValue(registry, 'egressd_firewall_batches_total', { result: 'failed' })
    const v4 = await counterValue(registry, 'egressd_firewall_elements_added_total', { family: 'ipv4' })
    const v6 = await counterValue(registry, 'egressd_firewall_elements_added_total', { family: 'ipv6' })
    const batchHist = (await registry.getSingleMetric('egressd_firewall_batch_seconds')!.get()).values
    const batchSum = batchHist.find((v) => (v as { metricName?: string }).metricName === 'egressd_firewall_batch_seconds_sum')!.value
    if (failed !== 0) throw new Error(`${failed} batches failed`)

    // --- correctness: every element in the kernel, with its timeout -----------------
    const inKernel = new Map<string, number>()
    for (const set of ['allow4', 'allow6']) {
      const { stdout } = await execFileP('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'set', 'inet', 'egressd', set], { maxBuffer: 512 * 1024 * 1024 })
      const doc = JSON.parse(stdout) as { nftables: Array<{ set?: { elem?: Array<{ elem: { val: { concat: [string, string, number] }; timeout: number } }> } }> }
      for (const item of doc.nftables) for (const e of item.set?.elem ?? []) inKernel.set(e.elem.val.concat.join(' . '), e.elem.timeout)
    }
    let expected = 0
    let missing = 0
    let wrongTimeout = 0
    for (let i = 0; i < issued; i++) {
      const want = answer(i).ttl + GRACE
      for (const key of keysOf(i)) {
        expected++
        const got = inKernel.get(key)
        if (got === undefined) missing++
        else if (got !== want) wrongTimeout++
      }
    }
    if (missing !== 0 || wrongTimeout !== 0) throw new Error(`set check failed: ${missing} missing, ${wrongTimeout} with a wrong timeout, of ${expected}`)
    if (v4 + v6 !== expected) throw new Error(`elements_added_total ${v4 + v6} != ${expected}`)

    const sorted = latency.slice(0, issued).sort()
    const batched = {
      group: 'batched',
      target_rate: rate,
      answers: issued,
      elements: expected,
      feed_seconds: round(feedSeconds),
      wall_seconds: round(wallSeconds),
      answers_per_s: Math.round(issued / feedSeconds),
      elements_per_s: Math.round(expected / wallSeconds),
      batches,
      batches_per_s: round(batches / wallSeconds),
      elements_per_batch: Math.round(expected / batches),
      nft_busy_fraction: round(batchSum / wallSeconds),
      p50_ms: round(percentile(sorted, 0.5)),
      p99_ms: round(percentile(sorted, 0.99)),
      max_ms: round(sorted[sorted.length - 1]!),
      verified: `${expected - missing}/${expected}`,
      speedup_vs_unbatched: round(expected / wallSeconds / baseline.elements_per_s),
    }
    emit(batched)

    // --- cache hits: the same answers again, all deduped -----------------------------
    // Answers are built before the clock starts: this times add() alone. add() returns
    // an already-resolved promise for a full skip, so the loop does not await each one.
    const runsBefore = batches
    const replay = Array.from({ length: issued }, (_, i) => answer(i))
    const waits: Promise<void>[] = new Array(issued)
    const h0 = process.hrtime.bigint()
    for (let i = 0; i < issued; i++) {
      const a = replay[i]!
      waits[i] = sink.add(a.rule.pattern, a.rule, [{ address: a.address, family: a.family, ttl: a.ttl }])
    }
    const hitNs = Number(process.hrtime.bigint() - h0) / issued
    await Promise.all(waits)
    const runsAfter = await counterValue(registry, 'egressd_firewall_batches_total', { result: 'applied' })
    if (runsAfter !== runsBefore) throw new Error(`cache-hit replay ran nft ${runsAfter - runsBefore} times`)
    const hits = { group: 'cache_hit_dedupe', answers: issued, ns_per_add: Math.round(hitNs), nft_runs: runsAfter - runsBefore }
    emit(hits)

    // --- idle: one answer at a time, the common case on a real gateway ---------------
    const idleCount = 50
    const idleLatency = new Float64Array(idleCount)
    for (let i = 0; i < idleCount; i++) {
      const a = answer(2_000_000 + i)
      const s0 = performance.now()
      await sink.add(a.rule.pattern, a.rule, [{ address: a.address, family: a.family, ttl: a.ttl }])
      idleLatency[i] = performance.now() - s0
    }
    const idleSorted = idleLatency.sort()
    const idle = { group: 'idle_single_answer', answers: idleCount, p50_ms: round(percentile(idleSorted, 0.5)), p99_ms: round(percentile(idleSorted, 0.99)) }
    emit(idle)
    await sink.stop()

    const table: string[][] = [
      ['group', 'elements', 'elements/s', 'batches/s', 'p50 ms', 'p99 ms'],
      ['unbatched (1 nft per element)', String(baseline.elements), String(baseline.elements_per_s), String(baseline.elements_per_s), String(baseline.p50_ms), '-'],
      [`batched @ ${rate}/s for ${seconds}s`, String(batched.elements), String(batched.elements_per_s), String(batched.batches_per_s), String(batched.p50_ms), String(batched.p99_ms)],
      ['cache hits (deduped)', String(hits.answers), '-', '0', `${hits.ns_per_add} ns/add`, '-'],
      ['idle: one answer at a time', String(idle.answers), '-', '-', String(idle.p50_ms), String(idle.p99_ms)],
    ]
    process.stdout.write('\n' + table.map((r) => r.map((c, j) => (j === 0 ? c.padEnd(32) : c.padStart(11))).join(' ')).join('\n') + '\n')
    process.stdout.write(
      `\nbatched/unbatched elements/s: ${batched.speedup_vs_unbatched}x; ${batched.elements_per_batch} elements per nft run; nft busy ${Math.round(batched.nft_busy_fraction * 100)} % of the time; all ${batched.verified} elements verified in the kernel with timeout TTL + ${GRACE}s\n`,
    )
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await cleanup()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run(process.argv.slice(2))
