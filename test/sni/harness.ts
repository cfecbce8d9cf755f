/**
 * Shared pieces of the SNI proxy tests: a Config with defaults, a compiled policy, a
 * proxy started in-process on 127.0.0.1:0 with captured JSON logs, a fake resolver, a
 * raw upstream that records what it receives, a raw client, and metric read-back.
 */
import net from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Config, SniConfig } from '../../src/config/types.js'
import { BlockedNames } from '../../src/metrics/blocked-names.js'
import { compilePolicy } from '../../src/policy/compile.js'
import { Decider } from '../../src/policy/decide.js'
import { GroupSet } from '../../src/policy/groups.js'
import type { Policy } from '../../src/policy/match.js'
import { DEFAULT_PORTS, type PolicyEntry } from '../../src/policy/types.js'
import { SniProxy, type SniPolicy, type SniResolver } from '../../src/sni/proxy.js'

export function makeConfig(sni: Partial<SniConfig> = {}): Config {
  return {
    file: 'test.yaml',
    dns: {
      listen: [],
      upstreams: [],
      blockResponse: 'nxdomain',
      rebindProtection: true,
      rebindExempt: [],
      clients: [],
      upstreamTimeoutMs: 1000,
      maxPendingUpstream: 100,
      maxTcpConnections: 100,
      tcpIdleTimeoutMs: 10_000,
      cache: { maxEntries: 100, maxBytes: 1 << 20, minTtl: 0, maxTtl: 86_400, negativeMaxTtl: 300 },
      rateLimit: { qps: 0, burst: 0 },
      maxUdpPayload: 1232,
      outsideClients: { answer: 'refused', refusedQps: 10 },
      cnameTargets: 'follow_policy',
      ech: 'strip',
      upstreamCaFile: '',
    },
    sni: {
      listen: [{ host: '127.0.0.1', port: 0, family: 4 }],
      upstreamPort: 443,
      onBlock: 'reset',
      allowPrivateDestinations: true,
      maxClientHelloBytes: 16_384,
      handshakeTimeoutMs: 10_000,
      connectTimeoutMs: 2_000,
      idleTimeoutMs: 0,
      maxConnections: 16_384,
      shutdownGraceMs: 1_000,
      ...sni,
    },
    metrics: { listen: null, blockedNamesMax: 100, blockedClientsMax: 100 },
    firewall: { nftables: { enabled: false, table: 'egressd', graceSeconds: 60, scope: 'shared', deviceKey: 'address' as const, maxElementsPerDevice: 1024, maxElements: 65_536 } },
    log: { level: 'info' },
    presets: [],
    policy: [],
  }
}

export function makePolicy(allow: string[], deny: string[] = []) {
  const entries: PolicyEntry[] = [
    ...allow.map((entry) => ({ action: 'allow' as const, entry, ports: DEFAULT_PORTS, source: 'test' })),
    ...deny.map((entry) => ({ action: 'deny' as const, entry, ports: DEFAULT_PORTS, source: 'test' })),
  ]
  return compilePolicy(entries)
}

/** The proxy's slice of a configuration: its settings and a decision over one group (no `groups:`). */
export function sniPolicy(config: Config, policy: Policy): SniPolicy {
  return { settings: config.sni, decider: new Decider(GroupSet.single(policy)) }
}

/** name → addresses; IPv6 goes to v6, the rest to v4. Unknown names reject, like NXDOMAIN. */
export function fakeResolver(map: Record<string, string[]>): SniResolver & { calls: string[] } {
  const calls: string[] = []
  return {
    calls,
    async lookup(name: string) {
      calls.push(name)
      const list = map[name]
      if (list === undefined) throw Object.assign(new Error(`${name}: no such name`), { code: 'ENXDOMAIN' })
      return { v6: list.filter((a) => a.includes(':')), v4: list.filter((a) => !a.includes(':')), ttl: 60 }
    },
  }
}

export interface TestProxy {
  proxy: SniProxy
  port: number
  registry: Registry
  logs: Record<string, unknown>[]
  metric(series: string): Promise<number>
  stop(): Promise<void>
}

export async function startProxy(opts: {
  sni?: Partial<SniConfig>
  allow?: string[]
  deny?: string[]
  resolver: SniResolver
  level?: string
}): Promise<TestProxy> {
  const logs: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line !== '') logs.push(JSON.parse(line))
      cb()
    },
  })
  const log = pino({ level: opts.level ?? 'info' }, sink)
  const registry = new Registry()
  const blocked = new BlockedNames(registry, 50)
  const proxy = new SniProxy(sniPolicy(makeConfig(opts.sni), makePolicy(opts.allow ?? [], opts.deny ?? [])), {
    log,
    registry,
    blocked,
    resolver: opts.resolver,
  })
  await proxy.start()
  return {
    proxy,
    port: proxy.boundAddresses[0]!.port,
    registry,
    logs,
    metric: async (series) => metricValue(await registry.metrics(), series),
    stop: () => proxy.stop(0),
  }
}

/** The value of one series, e.g. `egressd_sni_connections_total{verdict="allowed"}`; NaN if absent. */
export function metricValue(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1))
  }
  return NaN
}

export interface RawUpstream {
  port: number
  /** Connections accepted so far. */
  accepted: number
  /** Per connection: every byte received, and whether the client's FIN came. */
  received: { bytes: Buffer; ended: boolean }[]
  close(): Promise<void>
}

/**
 * A plain TCP upstream. After `expect` bytes (or the client's FIN) it writes `reply`
 * and, if `endAfterReply`, ends its side.
 */
export async function startRawUpstream(opts: { reply?: string; expect?: number; endAfterReply?: boolean } = {}): Promise<RawUpstream> {
  const sockets = new Set<net.Socket>()
  const state: RawUpstream = {
    port: 0,
    accepted: 0,
    received: [],
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    state.accepted++
    const rec = { bytes: Buffer.alloc(0), ended: false }
    state.received.push(rec)
    let replied = false
    const reply = () => {
      if (replied || opts.reply === undefined) return
      replied = true
      socket.write(opts.reply)
      if (opts.endAfterReply) socket.end()
    }
    socket.on('data', (chunk: Buffer) => {
      rec.bytes = Buffer.concat([rec.bytes, chunk])
      if (opts.expect !== undefined && rec.bytes.length >= opts.expect) reply()
    })
    socket.on('end', () => {
      rec.ended = true
      reply()
      if (!opts.endAfterReply || opts.reply === undefined) socket.end()
    })
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as net.AddressInfo).port
  return state
}

export interface RawOutcome {
  /** Error code seen by the client (ECONNRESET for a reset), or null. */
  error: string | null
  received: Buffer
  /** The server's FIN arrived. */
  ended: boolean
}

/**
 * Connects, writes `bytes` as told, then half-closes if `end`, and waits for the
 * connection to close (or `timeoutMs`, then destroys it and reports `error: 'TEST_TIMEOUT'`).
 */
export function rawExchange(
  port: number,
  bytes: Uint8Array,
  opts: { writes?: 'whole' | 'bytewise' | number[]; end?: boolean; timeoutMs?: number } = {},
): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true })
    const outcome: RawOutcome = { error: null, received: Buffer.alloc(0), ended: false }
    const timer = setTimeout(() => {
      outcome.error ??= 'TEST_TIMEOUT'
      socket.destroy()
    }, opts.timeoutMs ?? 5000)
    socket.on('data', (c: Buffer) => (outcome.received = Buffer.concat([outcome.received, c])))
    socket.on('end', () => {
      outcome.ended = true
      socket.end()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => (outcome.error ??= err.code ?? err.message))
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(outcome)
    })
    socket.on('connect', async () => {
      const writes = opts.writes ?? 'whole'
      const sizes = writes === 'whole' ? [bytes.length] : writes === 'bytewise' ? [1] : writes
      let at = 0
      for (let i = 0; at < bytes.length && !socket.destroyed; i++) {
        const n = Math.min(sizes[i % sizes.length]!, bytes.length - at)
        await new Promise<void>((r) => socket.write(bytes.subarray(at, at + n), () => r()))
        at += n
        // Let the proxy read each piece separately instead of one coalesced segment.
        if (writes !== 'whole') await new Promise((r) => setImmediate(r))
      }
      if (opts.end === true && !socket.destroyed) socket.end()
    })
  })
}
