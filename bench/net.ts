/**
 * `npm run bench -- net [--baseline DIR] [--rounds N] [--ms N]`: the address work on
 * egressd's per-query paths, in ns per operation:
 *   acl-memo     CidrTable.lookup of the address looked up last (a flood from one source)
 *   acl-v4       lookup over 4 096 distinct IPv4 sources (dns.clients-like table of 8 CIDRs,
 *                half of the sources inside none of them)
 *   acl-v6       the same with IPv6 sources, acl-mapped with ::ffff:a.b.c.d sources
 *   rebind       isPrivateAddress over the addresses of answers (A and AAAA rdata, the
 *                rebinding check on every forwarded answer)
 *   parse        parseIpInto over mixed address text; format: formatIp of AAAA rdata
 * Every case checks its count of hits against the count the corpus was built with.
 *
 * --baseline DIR: DIR is an older build's dist/ (e.g. of 27740ab, whose address code
 * lived in dist/dns/{cidr-table,private-address,wire}.js). Each round then runs a child
 * process per build, alternated ABBA, so the two never share a JIT or an inline cache;
 * min and median over rounds are reported. Without it, one process measures this tree.
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseCidr, type Cidr } from '../src/net/cidr.js'
import { prng } from '../test/helpers/prng.js'

interface Impl {
  CidrTable: new (entries: readonly { cidr: Cidr; value: number }[]) => { lookup(a: string): number }
  isPrivateAddress(bytes: Uint8Array, off: number, len: 4 | 16): boolean
  parseIpInto(text: string, out: Uint8Array): 0 | 4 | 16
  formatIp(buf: Uint8Array, off: number, len: 4 | 16): string
}

async function load(baseline: string | null): Promise<Impl> {
  if (baseline === null) {
    const [t, p, a] = await Promise.all([import('../src/net/cidr-table.js'), import('../src/net/private-ranges.js'), import('../src/net/address.js')])
    return { CidrTable: t.CidrTable, isPrivateAddress: p.isPrivateAddress, parseIpInto: a.parseIpInto, formatIp: a.formatIp }
  }
  const at = (f: string) => import(`${baseline}/${f}`) as Promise<Record<string, unknown>>
  if (existsSync(`${baseline}/net/address.js`)) {
    const [t, p, a] = await Promise.all([at('net/cidr-table.js'), at('net/private-ranges.js'), at('net/address.js')])
    return { CidrTable: t.CidrTable, isPrivateAddress: p.isPrivateAddress, parseIpInto: a.parseIpInto, formatIp: a.formatIp } as Impl
  }
  const [t, p, w] = await Promise.all([at('dns/cidr-table.js'), at('dns/private-address.js'), at('dns/wire.js')])
  return { CidrTable: t.CidrTable, isPrivateAddress: p.isPrivateAddress, parseIpInto: p.parseIpInto, formatIp: w.formatIp } as Impl
}

const N = 4096
const CLIENTS = ['127.0.0.0/8', '10.0.0.0/8', '192.168.0.0/16', '172.16.0.0/12', '100.64.0.0/10', '::1/128', 'fd00::/8', 'fe80::/10'].map((c) => parseCidr(c) as Cidr)

function corpus() {
  const r = prng(12)
  const int = (k: number) => Math.floor(r() * k)
  const v4: string[] = []
  const v6: string[] = []
  const mapped: string[] = []
  let inside4 = 0
  let inside6 = 0
  for (let i = 0; i < N; i++) {
    const hit = i % 2 === 0
    const a = hit ? [10, 192, 172, 100][i % 8 >> 1]! : [8, 9, 11, 203][i % 8 >> 1]!
    const b = a === 192 ? 168 : a === 172 ? 16 + int(16) : a === 100 ? 64 + int(64) : int(256)
    const text = `${a}.${b}.${int(256)}.${int(254) + 1}`
    v4.push(text)
    mapped.push(`::ffff:${text}`)
    if (hit) inside4++
    const h = () => int(0x10000).toString(16)
    v6.push(hit ? `fd${int(256).toString(16).padStart(2, '0')}:${h()}::${h()}:${h()}` : `2001:db8:${h()}::${h()}`)
    if (hit) inside6++
  }
  // Answer rdata: 4 A then 2 AAAA per answer, one in eight private.
  const rdata = new Uint8Array(N * 40)
  const lens: (4 | 16)[] = []
  const offs: number[] = []
  let priv = 0
  let off = 0
  for (let i = 0; i < N; i++) {
    const len: 4 | 16 = i % 3 === 2 ? 16 : 4
    const isPriv = i % 8 === 7
    if (len === 4) rdata.set(isPriv ? [10, int(256), int(256), 1] : [93, int(256), int(256), int(256)], off)
    else rdata.set(isPriv ? [0xfd, 0, int(256), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] : [0x26, 0x06, 0x47, 0, int(256), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x11], off)
    if (isPriv) priv++
    offs.push(off)
    lens.push(len)
    off += len
  }
  return { v4, v6, mapped, inside4, inside6, rdata, offs: Int32Array.from(offs), lens, priv, texts: [...v4.slice(0, N / 2), ...v6.slice(0, N / 2)] }
}

type Case = (impl: Impl, c: ReturnType<typeof corpus>) => { ops: number; run(): number; expect: number }

const CASES: Record<string, Case> = {
  'acl-memo': (impl) => {
    const t = new impl.CidrTable(CLIENTS.map((cidr, value) => ({ cidr, value })))
    return { ops: N, expect: N, run: () => { let n = 0; for (let i = 0; i < N; i++) if (t.lookup('10.1.2.3') >= 0) n++; return n } }
  },
  'acl-v4': (impl, c) => {
    const t = new impl.CidrTable(CLIENTS.map((cidr, value) => ({ cidr, value })))
    return { ops: N, expect: c.inside4, run: () => { let n = 0; for (let i = 0; i < N; i++) if (t.lookup(c.v4[i]!) >= 0) n++; return n } }
  },
  'acl-v6': (impl, c) => {
    const t = new impl.CidrTable(CLIENTS.map((cidr, value) => ({ cidr, value })))
    return { ops: N, expect: c.inside6, run: () => { let n = 0; for (let i = 0; i < N; i++) if (t.lookup(c.v6[i]!) >= 0) n++; return n } }
  },
  'acl-mapped': (impl, c) => {
    const t = new impl.CidrTable(CLIENTS.map((cidr, value) => ({ cidr, value })))
    return { ops: N, expect: c.inside4, run: () => { let n = 0; for (let i = 0; i < N; i++) if (t.lookup(c.mapped[i]!) >= 0) n++; return n } }
  },
  rebind: (impl, c) => ({
    ops: N,
    expect: c.priv,
    run: () => { let n = 0; for (let i = 0; i < N; i++) if (impl.isPrivateAddress(c.rdata, c.offs[i]!, c.lens[i]!)) n++; return n },
  }),
  parse: (impl, c) => {
    const out = new Uint8Array(16)
    return { ops: N, expect: N, run: () => { let n = 0; for (let i = 0; i < N; i++) if (impl.parseIpInto(c.texts[i]!, out) !== 0) n++; return n } }
  },
  format: (impl, c) => {
    const six = Array.from(c.offs).filter((_, i) => c.lens[i] === 16)
    return { ops: six.length, expect: six.length, run: () => { let n = 0; for (const o of six) n += impl.formatIp(c.rdata, o, 16).length > 0 ? 1 : 0; return n } }
  },
}

/** One measurement of every case: ns per op, the best of passes within `ms` per case. */
async function measure(baseline: string | null, ms: number): Promise<Record<string, number>> {
  const impl = await load(baseline)
  const c = corpus()
  const out: Record<string, number> = {}
  for (const [name, make] of Object.entries(CASES)) {
    const k = make(impl, c)
    for (let w = 0; w < 50; w++) k.run()
    let best = Infinity
    const until = performance.now() + ms
    let passes = 0
    while (performance.now() < until || passes < 5) {
      const t0 = process.hrtime.bigint()
      const got = k.run()
      const ns = Number(process.hrtime.bigint() - t0) / k.ops
      if (got !== k.expect) throw new Error(`${name}: ${got} hits, expected ${k.expect}`)
      best = Math.min(best, ns)
      passes++
    }
    out[name] = best
  }
  return out
}

function arg(args: string[], name: string): string | null {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1]! : null
}

export async function run(args: string[]): Promise<void> {
  const ms = Number(arg(args, '--ms') ?? 300)
  const child = arg(args, '--child')
  if (child !== null) {
    process.stdout.write(JSON.stringify(await measure(child === 'this' ? null : child, ms)) + '\n')
    return
  }
  const baseline = arg(args, '--baseline')
  const rounds = Number(arg(args, '--rounds') ?? 4)
  const builds: [string, string][] = baseline === null ? [['this', 'this']] : [['old', baseline], ['new', 'this']]
  const results = new Map<string, Record<string, number>[]>(builds.map(([label]) => [label, []]))
  const runner = fileURLToPath(new URL('./run.js', import.meta.url))
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? builds : [...builds].reverse() // ABBA
    for (const [label, where] of order) {
      const line = execFileSync(process.execPath, [runner, 'net', '--child', where, '--ms', String(ms)], { encoding: 'utf8', timeout: 120_000 })
      const m = JSON.parse(line.trim().split('\n').pop()!) as Record<string, number>
      results.get(label)!.push(m)
      process.stdout.write(JSON.stringify({ bench: 'net', round: r, build: label, ...m }) + '\n')
    }
  }
  const stat = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b)
    return { min: s[0]!, median: s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2 }
  }
  const cpu = os.cpus()[0]?.model ?? '?'
  process.stdout.write(`\nnet: ${new Date().toISOString()}, ${os.cpus().length} cores (${cpu}), node ${process.version}, ${rounds} rounds, load ${os.loadavg()[0]!.toFixed(1)}\n`)
  process.stdout.write(`| case | ${builds.map(([l]) => `${l} min / median ns`).join(' | ')} |\n|---|${builds.map(() => '---:|').join('')}\n`)
  for (const name of Object.keys(CASES)) {
    const cells = builds.map(([l]) => {
      const s = stat(results.get(l)!.map((m) => m[name]!))
      return `${s.min.toFixed(1)} / ${s.median.toFixed(1)}`
    })
    process.stdout.write(`| ${name} | ${cells.join(' | ')} |\n`)
  }
}
