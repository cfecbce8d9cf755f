/**
 * Scope device against scope shared, in the same run and the same network namespace:
 * 10 000 answers/s (default) for 3 s, spread over 200 devices, each answer a separate
 * `add()` as a DNS answer would be (1 in 10 IPv6, 1 in 5 with a second port). Per
 * scope: elements/s applied, the answer's wait (add → applied) p50/p99, nft runs. The
 * address pool is 2 000 destinations, so in scope shared most answers are deduped
 * (many devices asking for the same names is what a segment of alike devices does),
 * while in scope device each device's first answer for a destination is a new element.
 *
 * Then the memory an element costs:
 * - egressd's bookkeeping (DeviceElements, scope device): heap growth after gc per
 *   element, with 100 000 elements over 200 devices (no nft: a runner that does nothing);
 * - the kernel's: `Slab:` of /proc/meminfo before and after writing 100 000 elements
 *   into a set of each type (a machine-wide figure: read on a quiet machine, rounded).
 *
 *   npx tsc -p tsconfig.bench.json && node --expose-gc build/bench/run.js firewall-scope [rate] [seconds] [devices]
 *
 * Needs root, `ip` and `nft`; prints a skip line otherwise.
 */
import { readFileSync } from 'node:fs'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { NftablesSink, SpawnNftRunner, type NftRunner } from '../src/firewall/nftables-sink.js'
import { declareScript, SET_TYPES, type Scope } from '../src/firewall/nft-script.js'
import { canRun, counterValue, execFileP, GRACE, percentile, R443, R443_123, round } from './firewall/common.js'

const DESTINATIONS = 2000

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ bench: 'firewall-scope', ...o }) + '\n')
}

/** Answer i: a device drawn by a multiplicative hash of i, destination i % DESTINATIONS, its family, its ports. */
function answer(i: number, devices: number) {
  const d = Math.imul(i, 2654435761) >>> 0 >>> 8
  const dev = d % devices
  const dest = i % DESTINATIONS
  const r = dest % 5 === 0 ? R443_123 : R443
  const ttl = 300
  if (dest % 10 === 3) return { client: `fd00::${(dev + 1).toString(16)}`, address: `2001:db8::${dest.toString(16)}`, family: 6 as const, ttl, rule: r }
  return { client: `10.0.${dev >> 8}.${(dev & 255) + 1}`, address: `198.18.${dest >> 8}.${dest & 255}`, family: 4 as const, ttl, rule: r }
}

async function load(scope: Scope, runner: NftRunner, rate: number, seconds: number, devices: number) {
  const registry = new Registry()
  const cfg = { enabled: true, table: 'egressd', graceSeconds: GRACE, scope, deviceKey: 'address' as const, maxElementsPerDevice: 4096, maxElements: 1 << 20 }
  const sink = new NftablesSink(cfg, { log: pino({ level: 'warn' }), registry, runner, maxKnown: 1 << 20, maxPending: 1 << 16 })
  await sink.start()
  const total = Math.round(rate * seconds)
  const started = new Float64Array(total)
  const latency = new Float64Array(total)
  let issued = 0
  let done = 0
  const pending: Promise<void>[] = []
  const t0 = performance.now()
  await new Promise<void>((resolveFeed) => {
    const feed = () => {
      const elapsed = (performance.now() - t0) / 1000
      const target = Math.min(total, Math.floor(rate * elapsed))
      while (issued < target) {
        const i = issued++
        const a = answer(i, devices)
        started[i] = performance.now()
        pending.push(
          sink.add(a.rule.pattern, a.rule, [{ address: a.address, family: a.family, ttl: a.ttl }], a.client).then(() => {
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
  await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, 20_000))])
  const wallSeconds = (performance.now() - t0) / 1000
  if (done !== issued) throw new Error(`${scope}: only ${done} of ${issued} adds settled within the drain limit`)
  const failed = await counterValue(registry, 'egressd_firewall_batches_total', { result: 'failed' })
  if (failed !== 0) throw new Error(`${scope}: ${failed} batches failed`)
  const elements = await counterValue(registry, 'egressd_firewall_elements_added_total')
  const batches = await counterValue(registry, 'egressd_firewall_batches_total', { result: 'applied' })
  const sorted = latency.slice(0, issued).sort()
  await sink.stop()
  return {
    group: scope,
    target_rate: rate,
    devices,
    answers: issued,
    answers_per_s: Math.round(issued / feedSeconds),
    elements_written: elements,
    elements_per_s: Math.round(elements / wallSeconds),
    held: sink.knownSize,
    nft_runs: batches,
    p50_ms: round(percentile(sorted, 0.5)),
    p99_ms: round(percentile(sorted, 0.99)),
    max_ms: round(sorted[sorted.length - 1]!),
  }
}

/** Heap bytes per element of scope device's bookkeeping, after gc, nft not involved. */
async function bookkeepingBytes(count: number, devices: number): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) return NaN
  const nothing: NftRunner = { run: () => Promise.resolve() }
  const cfg = { enabled: true, table: 'egressd', graceSeconds: GRACE, scope: 'device' as const, deviceKey: 'address' as const, maxElementsPerDevice: 1 << 20, maxElements: 1 << 22 }
  const sink = new NftablesSink(cfg, { log: pino({ level: 'warn' }), registry: new Registry(), runner: nothing, maxKnown: 1 << 22, maxPending: 1 << 22 })
  gc()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < count; i++) {
    const d = i % devices
    const dest = Math.floor(i / devices)
    void sink.add('n', R443, [{ address: `198.18.${dest >> 8}.${dest & 255}`, family: 4, ttl: 300 }], `10.0.${d >> 8}.${(d & 255) + 1}`)
  }
  await sink.stop()
  gc()
  const after = process.memoryUsage().heapUsed
  if (sink.knownSize !== count) throw new Error(`bookkeeping holds ${sink.knownSize}, expected ${count}`)
  return (after - before) / count
}

function slabKiB(): number {
  const m = /^Slab:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))
  return m ? Number(m[1]) : NaN
}

/** Kernel slab growth per element for a set type, 100 000 elements in 10 nft runs. */
async function kernelBytes(ns: string, set: keyof typeof SET_TYPES, count: number): Promise<number> {
  const nft = new SpawnNftRunner({ command: ['ip', 'netns', 'exec', ns, 'nft'], timeoutMs: 60_000 })
  await nft.run(`add table inet slab\nadd set inet slab s { type ${SET_TYPES[set]}; flags timeout; }\n`)
  const before = slabKiB()
  const per = count / 10
  for (let b = 0; b < 10; b++) {
    const parts: string[] = []
    for (let j = 0; j < per; j++) {
      const i = b * per + j
      const dst = set.startsWith('allow6') ? `2001:db8::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}` : `198.${18 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`
      // The device part of the key: an address of the destination's family, or a MAC.
      const device = set.endsWith('_dev') ? (set.startsWith('allow6') ? 'fd00::2 . ' : '10.0.0.2 . ') : set.endsWith('_mac') ? '02:00:00:00:00:02 . ' : ''
      parts.push(device + dst + ' . tcp . 443 timeout 3600s')
    }
    await nft.run(`add element inet slab s { ${parts.join(', ')} }\n`)
  }
  const after = slabKiB()
  await nft.run('delete table inet slab\n')
  return ((after - before) * 1024) / count
}

export async function run(args: string[]): Promise<void> {
  const rate = Math.min(50_000, Math.max(100, Number(args[0] ?? 10_000)))
  const seconds = Math.min(10, Math.max(0.5, Number(args[1] ?? 3)))
  const devices = Math.min(10_000, Math.max(1, Number(args[2] ?? 200)))
  const why = await canRun()
  if (why !== null) {
    emit({ skipped: why })
    process.stdout.write(`firewall-scope benchmark skipped: ${why}\n`)
    return
  }
  const ns = `egressd-bench-scope-${process.pid}`
  await execFileP('ip', ['netns', 'add', ns])
  const cleanup = () => execFileP('ip', ['netns', 'del', ns]).catch(() => {})
  const onSignal = () => void cleanup().then(() => process.exit(130))
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    const runner = new SpawnNftRunner({ command: ['ip', 'netns', 'exec', ns, 'nft'], timeoutMs: 30_000 })
    const results = []
    // shared, device, shared, device: each scope runs twice, after the other, on a fresh table.
    for (const scope of ['shared', 'device', 'shared', 'device'] as const) {
      await runner.run('add table inet egressd\ndelete table inet egressd\n' + declareScript('egressd', scope))
      const r = await load(scope, runner, rate, seconds, devices)
      emit(r)
      results.push(r)
    }
    const book = round(await bookkeepingBytes(100_000, devices))
    emit({ group: 'bookkeeping', elements: 100_000, devices, heap_bytes_per_element: book })
    const kernel: Record<string, number> = {}
    for (const set of Object.keys(SET_TYPES) as Array<keyof typeof SET_TYPES>) kernel[set] = Math.round(await kernelBytes(ns, set, 100_000))
    emit({ group: 'kernel_slab', elements: 100_000, bytes_per_element: kernel })

    const rows = [['scope', 'answers', 'elements', 'elements/s', 'nft runs', 'p50 ms', 'p99 ms', 'max ms']]
    for (const r of results) rows.push([r.group, String(r.answers), String(r.elements_written), String(r.elements_per_s), String(r.nft_runs), String(r.p50_ms), String(r.p99_ms), String(r.max_ms)])
    process.stdout.write('\n' + rows.map((r) => r.map((c, j) => (j === 0 ? c.padEnd(8) : c.padStart(10))).join(' ')).join('\n') + '\n')
    process.stdout.write(`\nbookkeeping (scope device): ${book} heap bytes per element; kernel slab per element: ${JSON.stringify(kernel)}\n`)
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    await cleanup()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await run(process.argv.slice(2))
