/** Fixtures for the DNS tests: configs with defaults, a dns2 fake upstream, raw clients, dig. */
import dgram from 'node:dgram'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Registry } from 'prom-client'
import { pino } from 'pino'
import dnsPacket from 'dns-packet'
import { TCPServer, UDPServer, type Packet as Dns2Packet } from 'dns2'
import type { Config, DnsConfig } from '../../src/config/types.js'
import { parseCidr, type Cidr } from '../../src/net/cidr.js'
import { parseHostPort, type HostPort } from '../../src/net/host-port.js'
import type { PolicyEntry } from '../../src/policy/types.js'
import { compileConfig } from '../../src/daemon/compiled-config.js'
import type { Policy } from '../../src/policy/match.js'
import { BlockedNames } from '../../src/metrics/blocked-names.js'
import { DnsService, type DnsDeps } from '../../src/dns/service.js'

const run = promisify(execFile)

/** The configuration's own parsers, so fixtures cannot drift from what the loader accepts. */
export function hostPort(text: string): HostPort {
  const hp = parseHostPort(text)
  if (typeof hp === 'string') throw new Error(hp)
  return hp
}

export function cidr(text: string): Cidr {
  const c = parseCidr(text)
  if (typeof c === 'string') throw new Error(c)
  return c
}

export type DnsOverrides = Partial<Omit<DnsConfig, 'cache' | 'rateLimit'>> & {
  cache?: Partial<DnsConfig['cache']>
  rateLimit?: Partial<DnsConfig['rateLimit']>
}

export function allow(...names: string[]): PolicyEntry[] {
  return names.map((entry) => ({ action: 'allow' as const, entry, ports: [{ port: 443, proto: 'tcp' as const }], source: 'test' }))
}

export function deny(...names: string[]): PolicyEntry[] {
  return names.map((entry) => ({ action: 'deny' as const, entry, ports: [{ port: 443, proto: 'tcp' as const }], source: 'test' }))
}

/** A Config with the documented defaults (docs/design.md), listening on 127.0.0.1:0, and `dns` fields overridden. */
export function makeConfig(dns: DnsOverrides = {}, policy: readonly PolicyEntry[] = []): Config {
  const d: DnsConfig = {
    listen: [hostPort('127.0.0.1:0')],
    upstreams: [],
    blockResponse: 'nxdomain',
    rebindProtection: true,
    rebindExempt: [],
    clients: ['127.0.0.0/8', '::1/128'].map(cidr),
    upstreamTimeoutMs: 500,
    maxPendingUpstream: 1000,
    maxTcpConnections: 64,
    tcpIdleTimeoutMs: 2000,
    maxUdpPayload: 1232,
    outsideClients: { answer: 'refused', refusedQps: 10 },
    cnameTargets: 'follow_policy',
    ech: 'strip',
    upstreamCaFile: '',
    ...dns,
    cache: { maxEntries: 10_000, maxBytes: 8 << 20, minTtl: 0, maxTtl: 86_400, negativeMaxTtl: 300, ...dns.cache },
    rateLimit: { qps: 0, burst: 0, ...dns.rateLimit },
  }
  return {
    file: 'test.yaml',
    dns: d,
    sni: {
      listen: [],
      upstreamPort: 443,
      onBlock: 'reset',
      allowPrivateDestinations: false,
      maxClientHelloBytes: 16384,
      handshakeTimeoutMs: 10000,
      connectTimeoutMs: 5000,
      idleTimeoutMs: 0,
      maxConnections: 1000,
      shutdownGraceMs: 1000,
    },
    metrics: { listen: null, blockedNamesMax: 100, blockedClientsMax: 100 },
    firewall: { nftables: { enabled: false, table: 'egressd', graceSeconds: 60, scope: 'shared', deviceKey: 'address' as const, maxElementsPerDevice: 1024, maxElements: 65_536 } },
    log: { level: 'silent' },
    presets: [],
    policy,
  }
}

export interface Started {
  svc: DnsService
  port: number
  registry: Registry
  logs: Record<string, unknown>[]
  policy: Policy
  close(): Promise<void>
}

/** Starts a DnsService in-process on 127.0.0.1:0 with a JSON-lines log captured in `logs`. */
export async function startService(config: Config, extra: Partial<DnsDeps> = {}): Promise<Started> {
  const registry = new Registry()
  const logs: Record<string, unknown>[] = []
  const log = pino(
    { level: 'debug' },
    {
      write(line: string) {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      },
    },
  )
  const compiled = compileConfig(config)
  const svc = new DnsService(compiled.dns, { log, registry, blocked: new BlockedNames(registry, 100), ...extra })
  await svc.start()
  return { svc, port: svc.boundAddresses.udp[0]!.port, registry, logs, policy: compiled.groups.default.policy, close: () => svc.stop() }
}

/**
 * A sample's value; with `labels` (`reason="timeout"`, or several joined by commas) the sum
 * over every series that carries them, whatever other labels (such as `upstream`) it has;
 * without, the unlabelled sample or the sum over every series of `name`.
 */
export async function metric(registry: Registry, name: string, labels = ''): Promise<number> {
  const text = await registry.metrics()
  const want = labels ? labels.split(/,(?=[a-z_]+=")/) : []
  let sum = 0
  for (const l of text.split('\n')) {
    if (!labels && l.startsWith(`${name} `)) return Number(l.slice(l.lastIndexOf(' ') + 1))
    if (!l.startsWith(`${name}{`)) continue
    const have = l.slice(name.length + 1, l.lastIndexOf('}')).split(/,(?=[a-z_]+=")/)
    if (want.every((w) => have.includes(w))) sum += Number(l.slice(l.lastIndexOf(' ') + 1))
  }
  return sum
}

// ---------------------------------------------------------------------------------
// Fake upstream: dns2's UDP and TCP servers on one port; answers built by a zone
// function as dns-packet objects or raw bytes.

export interface UpQuery {
  name: string
  type: string
  transport: 'udp' | 'tcp'
  id: number
  raw: boolean
}

export type ZoneAnswer = Partial<dnsPacket.Packet> | Buffer | null
export type Zone = (q: UpQuery) => ZoneAnswer | Promise<ZoneAnswer>

export interface FakeUpstream {
  port: number
  hostPort: HostPort
  queries: UpQuery[]
  close(): Promise<void>
}

export async function fakeUpstream(zone: Zone): Promise<FakeUpstream> {
  const queries: UpQuery[] = []
  const handle = (transport: 'udp' | 'tcp') => async (request: Dns2Packet, send: (r: Buffer) => unknown) => {
    const q = request.questions[0]!
    const uq: UpQuery = { name: q.name, type: typeFromNumber(Number(q.type)) ?? `UNKNOWN_${q.type}`, transport, id: request.header.id, raw: false }
    queries.push(uq)
    const a = await zone(uq)
    if (a === null) return
    if (Buffer.isBuffer(a)) return send(a)
    send(
      dnsPacket.encode({
        type: 'response',
        id: request.header.id,
        questions: [{ name: q.name, type: uq.type as dnsPacket.RecordType, class: 'IN' }],
        answers: [],
        authorities: [],
        additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: 0, options: [{ code: 10, data: Buffer.from("0123456789abcdef") }] } as unknown as dnsPacket.Answer],
        ...a,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (a.flags ?? 0),
      } as dnsPacket.Packet),
    )
  }
  const tcp = new TCPServer()
  tcp.on('request', handle('tcp') as never)
  tcp.on('requestError', () => {})
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', () => resolve()))
  const port = (tcp.address() as net.AddressInfo).port
  const udp = new UDPServer()
  udp.on('request', handle('udp') as never)
  udp.on('requestError', () => {})
  await udp.listen(port, '127.0.0.1')
  return {
    port,
    hostPort: { host: '127.0.0.1', port, family: 4 },
    queries,
    async close() {
      await new Promise<void>((resolve) => udp.close(() => resolve()))
      await new Promise<void>((resolve) => {
        tcp.close(() => resolve())
        ;(tcp as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
      })
    },
  }
}

const TYPES: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 16: 'TXT', 28: 'AAAA', 65: 'UNKNOWN_65', 255: 'ANY', 13: 'HINFO' }
function typeFromNumber(n: number): string | undefined {
  return TYPES[n]
}

/** An SOA for negative answers. */
export function soa(zone: string, ttl: number, minimum: number): dnsPacket.Answer {
  return {
    type: 'SOA',
    name: zone,
    ttl,
    data: { mname: 'ns.' + zone, rname: 'hostmaster.' + zone, serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum },
  } as dnsPacket.Answer
}

// ---------------------------------------------------------------------------------
// Clients

/** A query as dns-packet encodes it; `edns` adds an OPT (with DO when `dnssec`). */
export function query(name: string, type: string, opts: { id?: number; edns?: boolean; dnssec?: boolean; udpSize?: number } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: opts.id ?? 0x1234,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as dnsPacket.RecordType, class: 'IN' }],
    additionals:
      opts.edns || opts.dnssec
        ? [{ type: 'OPT', name: '.', udpPayloadSize: opts.udpSize ?? 1232, flags: opts.dnssec ? dnsPacket.DNSSEC_OK : 0 } as dnsPacket.Answer]
        : [],
  })
}

/**
 * Sends one datagram and resolves with the first reply, or null after `timeoutMs`.
 * `local`: the source address (another 127/8 address stands for another device).
 */
export async function udpExchange(port: number, msg: Buffer, timeoutMs = 1500, host = '127.0.0.1', local?: string): Promise<Buffer | null> {
  const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
  if (local !== undefined) await new Promise<void>((r) => s.bind(0, local, () => r()))
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.close()
      resolve(null)
    }, timeoutMs)
    s.on('message', (m) => {
      clearTimeout(timer)
      s.close()
      resolve(m)
    })
    s.send(msg, port, host)
  })
}

/** One TCP connection; `send` frames a message; `next()` resolves with the next reply frame. */
export async function tcpClient(port: number): Promise<{
  sock: net.Socket
  send(msg: Buffer): void
  next(timeoutMs?: number): Promise<Buffer | null>
  closed: Promise<void>
}> {
  const sock = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve)
    sock.once('error', reject)
  })
  let buf = Buffer.alloc(0)
  const frames: Buffer[] = []
  const waiters: ((b: Buffer | null) => void)[] = []
  sock.on('data', (c) => {
    buf = Buffer.concat([buf, c])
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const f = buf.subarray(2, 2 + buf.readUInt16BE(0))
      buf = buf.subarray(2 + f.length)
      const w = waiters.shift()
      if (w) w(f)
      else frames.push(f)
    }
  })
  sock.on('error', () => {})
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()))
  void closed.then(() => {
    for (const w of waiters.splice(0)) w(null)
  })
  return {
    sock,
    send(msg) {
      const len = Buffer.alloc(2)
      len.writeUInt16BE(msg.length)
      sock.write(Buffer.concat([len, msg]))
    },
    next(timeoutMs = 2000) {
      const f = frames.shift()
      if (f) return Promise.resolve(f)
      if (sock.destroyed) return Promise.resolve(null)
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(null), timeoutMs)
        waiters.push((b) => {
          clearTimeout(timer)
          resolve(b)
        })
      })
    },
    closed,
  }
}

export const decode = (b: Buffer) => dnsPacket.decode(b)

/** The EDE options (RFC 8914: info code, extra text) of a reply's OPT. */
export function edes(reply: Buffer): { code: number; text: string }[] {
  const opt = decode(reply).additionals!.find((a) => a.type === 'OPT') as unknown as { options?: { code: number; data: Buffer }[] } | undefined
  return (opt?.options ?? []).filter((o) => o.code === 15).map((o) => ({ code: o.data.readUInt16BE(0), text: o.data.subarray(2).toString() }))
}

export async function hasTool(name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`])
    return true
  } catch {
    return false
  }
}

export interface DigResult {
  status: string
  flags: string[]
  ede: string | null
  answers: string[][]
  authority: string[][]
  question: string | null
  text: string
}

/** Runs dig (or kdig) against 127.0.0.1:port and parses the parts the tests read. */
export async function dig(tool: 'dig' | 'kdig', port: number, args: string[]): Promise<DigResult> {
  const base = tool === 'dig' ? ['@127.0.0.1', '-p', String(port), '+tries=1', '+time=2'] : ['@127.0.0.1', '-p', String(port), '+retry=0', '+time=2']
  const { stdout } = await run(tool, [...base, ...args], { timeout: 10_000 }).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }))
  const status = /status: ([A-Z]+)/.exec(stdout)?.[1] ?? 'NONE'
  const flags = (/flags: ([a-z ]+);/.exec(stdout)?.[1] ?? '').trim().split(/\s+/)
  const ede = /EDE: (.*)/.exec(stdout)?.[1]?.trim() ?? null
  const section = (title: string) => {
    const lines = stdout.split('\n')
    const start = lines.findIndex((l) => l.startsWith(`;; ${title} SECTION:`) || l.startsWith(`;; ${title} SECTION`))
    if (start < 0) return []
    const out: string[][] = []
    for (let i = start + 1; i < lines.length && lines[i]!.trim() !== '' && !lines[i]!.startsWith(';;'); i++) out.push(lines[i]!.trim().split(/\s+/))
    return out
  }
  const qline = section('QUESTION')[0]
  return { status, flags, ede, answers: section('ANSWER'), authority: section('AUTHORITY'), question: qline ? qline.join(' ') : null, text: stdout }
}

/** HTTPS (type 65) rdata: priority 1, target ".", alpn="h2". */
export const HTTPS_RDATA = Buffer.from('0001000001000302' + '6832', 'hex')

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The zone most tests share; see each name for what it exercises. */
export const standardZone: Zone = async (q) => {
  const name = q.name.toLowerCase()
  const rr = (type: string, data: unknown, ttl = 300, owner = q.name) => ({ type, name: owner, ttl, data }) as dnsPacket.Answer
  switch (name) {
    case 'allowed.example':
    case 'www.allowed.example':
    case 'api.vendor.example':
      if (q.type === 'A') return { answers: [rr('A', '93.184.216.34')] }
      if (q.type === 'AAAA') return { answers: [rr('AAAA', '2606:2800:220:1::1')] }
      return { answers: [], authorities: [soa('allowed.example', 300, 60)] }
    case 'txt.allowed.example':
      return { answers: [rr('TXT', ['hello', 'world'], 60)] }
    case 'https.allowed.example':
      return { answers: [rr('UNKNOWN_65', HTTPS_RDATA, 60)] }
    case 'cname.allowed.example':
      if (q.type !== 'A') return { answers: [rr('CNAME', 'target.elsewhere.example', 100)] }
      return { answers: [rr('CNAME', 'target.elsewhere.example', 100), rr('A', '1.2.3.4', 50, 'target.elsewhere.example')] }
    case 'cnameonly.allowed.example':
      return { answers: [rr('CNAME', 'chained.allowed.example', 100)] }
    case 'chained.allowed.example':
      return q.type === 'A' ? { answers: [rr('A', '9.9.9.9', 70)] } : { answers: [], authorities: [soa('allowed.example', 300, 60)] }
    case 'private.allowed.example':
      return { answers: [rr('A', '10.0.0.5')] }
    case 'exempt.allowed.example':
      return { answers: [rr('A', '192.168.1.10')] }
    case 'nx.allowed.example':
      return { flags: 3, answers: [], authorities: [soa('allowed.example', 60, 30)] }
    case 'big.allowed.example':
      return { answers: Array.from({ length: 12 }, (_, i) => rr('TXT', ['x'.repeat(60) + i], 60)) }
    case 'tc.allowed.example':
      if (q.transport === 'udp') return { flags: dnsPacket.TRUNCATED_RESPONSE, answers: [] }
      return { answers: [rr('A', '5.6.7.8')] }
    case 'slowish.allowed.example':
      await sleep(150)
      return { answers: [rr('A', '4.4.4.4')] }
    case 'servfail.allowed.example':
      return { flags: 2, answers: [] }
    case 'silent.allowed.example':
      return null
    default:
      if (name.endsWith('.slow.allowed.example')) {
        await sleep(100)
        return { answers: [rr('A', '4.4.4.5', 30)] }
      }
      return { flags: 3, answers: [], authorities: [soa('example', 60, 30)] }
  }
}

export const STANDARD_POLICY: PolicyEntry[] = [
  // target.elsewhere.example: the CNAME target of cname.allowed.example; alias targets must be allowed too.
  ...allow('allowed.example', '*.allowed.example', 'api.vendor.example', 'target.elsewhere.example'),
  ...deny('denied.allowed.example'),
]

/** A raw header with the given flags and counts, followed by `rest`: for malformed-input cases. */
export function rawHeader(id: number, flags: number, counts: [number, number, number, number], rest: number[] = []): Buffer {
  const b = Buffer.alloc(12 + rest.length)
  b.writeUInt16BE(id, 0)
  b.writeUInt16BE(flags, 2)
  counts.forEach((c, i) => b.writeUInt16BE(c, 4 + 2 * i))
  Buffer.from(rest).copy(b, 12)
  return b
}
