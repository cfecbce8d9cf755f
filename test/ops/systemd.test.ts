import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { NFT_DROP_IN, ROOT, run, UNIT_FILE, which } from './assets.js'
import { freePort } from '../helpers/daemon.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import dgram from 'node:dgram'
import dnsPacket from 'dns-packet'

const MAX_EXPOSURE = 2.0
const SCORE_FILE = join(ROOT, 'test', 'ops', 'SECURITY-SCORE.md')

/** `Key=value` lines of one unit file, in order (a key may repeat). */
function directives(text: string): { section: string; key: string; value: string }[] {
  const out: { section: string; key: string; value: string }[] = []
  let section = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const s = /^\[(.+)\]$/.exec(line)
    if (s) {
      section = s[1]!
      continue
    }
    const eq = line.indexOf('=')
    out.push({ section, key: line.slice(0, eq), value: line.slice(eq + 1) })
  }
  return out
}

const unitText = readFileSync(UNIT_FILE, 'utf8')
const unit = directives(unitText)
const values = (key: string) => unit.filter((d) => d.key === key).map((d) => d.value)
const one = (key: string) => {
  const v = values(key)
  return v.length === 1 ? v[0] : `${v.length} values: ${v.join(' | ')}`
}

t.test('the unit says what the design asks for', async (t) => {
  t.equal(one('ExecStart'), '/usr/bin/egressd run -c /etc/egressd/egressd.yaml')
  t.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID')
  t.equal(one('Type'), 'notify', 'readiness through sd_notify')
  t.equal(one('NotifyAccess'), 'all', 'READY=1 comes from a systemd-notify child, not the main PID')
  t.equal(one('Restart'), 'on-failure')
  t.equal(one('DynamicUser'), 'yes')
  t.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE', 'only the port-53 capability')
  t.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE')
  t.equal(one('MemoryDenyWriteExecute'), 'no', 'V8 JIT')
  t.match(unitText, /V8[^\n]*\n[^\n]*(?:writable|executable)/, 'and the unit says why')
  t.equal(one('RestrictAddressFamilies'), 'AF_INET AF_INET6 AF_UNIX AF_NETLINK')
  t.equal(values('SystemCallFilter')[0], '@system-service')
  t.equal(one('SystemCallArchitectures'), 'native')
  t.equal(one('LimitNOFILE'), '65536')
  t.equal(one('UMask'), '0077')
  for (const key of [
    'ProtectHome',
    'PrivateTmp',
    'PrivateDevices',
    'NoNewPrivileges',
    'LockPersonality',
    'ProtectKernelTunables',
    'ProtectKernelModules',
    'ProtectKernelLogs',
    'ProtectControlGroups',
    'ProtectClock',
    'ProtectHostname',
    'RestrictNamespaces',
    'RestrictRealtime',
    'RestrictSUIDSGID',
    'RemoveIPC',
  ]) {
    t.equal(one(key), 'yes', key)
  }
  t.equal(one('ProtectSystem'), 'strict')
  t.ok(values('MemoryMax').length === 1 && values('TasksMax').length === 1, 'memory and task limits')
  t.same(values('IPAddressDeny'), [], 'no IP filter: it proxies to whatever allowed names resolve to')
  t.notOk(unit.some((d) => d.section === 'Service' && /^StartLimit/.test(d.key)), 'start limits live in [Unit]')

  const dropIn = directives(readFileSync(NFT_DROP_IN, 'utf8'))
  const last = (key: string) => dropIn.filter((d) => d.key === key).map((d) => d.value)
  t.same(last('AmbientCapabilities'), ['', 'CAP_NET_BIND_SERVICE CAP_NET_ADMIN'], 'the nft drop-in resets, then grants CAP_NET_ADMIN')
  t.same(last('CapabilityBoundingSet'), ['', 'CAP_NET_BIND_SERVICE CAP_NET_ADMIN'])
})

/** The unit and a stand-in executable in a temp dir, so `verify` finds ExecStart. */
function stageUnit(withDropIn: boolean, text = unitText): string {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-unit-'))
  const exe = join(dir, 'egressd')
  writeFileSync(exe, '#!/bin/sh\nexit 0\n')
  chmodSync(exe, 0o755)
  writeFileSync(join(dir, 'egressd.service'), text.replaceAll('/usr/bin/egressd', exe))
  if (withDropIn) {
    mkdirSync(join(dir, 'egressd.service.d'))
    copyFileSync(NFT_DROP_IN, join(dir, 'egressd.service.d', 'nft.conf'))
  }
  return join(dir, 'egressd.service')
}

const analyze = await which('systemd-analyze')
const systemdVersion = analyze ? Number(/systemd (\d+)/.exec((await run(analyze, ['--version'])).stdout)?.[1] ?? 0) : 0
// security --offline arrived in systemd 252.
const analyzeSkip = !analyze ? 'systemd-analyze missing (Debian package "systemd")' : systemdVersion < 252 ? `systemd-analyze ${systemdVersion} is older than 252 (no security --offline)` : false
if (analyzeSkip) console.log(`# unit not verified or scored: ${analyzeSkip}`)

t.test('systemd-analyze', { skip: analyzeSkip }, async (t) => {
  if (!analyze) return
  t.comment(`systemd ${systemdVersion}`)

  t.test('verify: no warnings, alone and with the nft drop-in', async (t) => {
    for (const withDropIn of [false, true]) {
      const r = await run(analyze, ['verify', stageUnit(withDropIn)])
      t.equal(r.code, 0, `exit code (drop-in: ${withDropIn})`)
      // verify exits 0 on unknown keys and misplaced settings: the warnings are the signal.
      t.equal(r.stderr.trim(), '', `no warnings (drop-in: ${withDropIn})`)
    }
    // The check above must be able to fail: a misplaced key is reported.
    const bad = await run(analyze, ['verify', stageUnit(false, unitText.replace('[Service]\n', '[Service]\nProtectSystm=strict\n'))])
    t.match(bad.stderr, /Unknown key 'ProtectSystm' in section \[Service\]/, 'a misspelt key is caught')
  })

  const scores: Record<string, number> = {}
  t.test('security --offline: exposure at most 2.0', async (t) => {
    for (const [label, withDropIn] of [
      ['egressd.service', false],
      ['egressd.service + egressd-nft.conf', true],
    ] as const) {
      const r = await run(analyze, ['security', '--offline=yes', stageUnit(withDropIn)])
      const m = /Overall exposure level for egressd\.service: (\d+\.\d+)/.exec(r.stdout)
      t.ok(m, `a score is printed for ${label}`)
      const score = Number(m?.[1])
      scores[label] = score
      t.comment(`systemd-analyze security --offline=yes ${label}: exposure ${score}`)
      t.ok(score <= MAX_EXPOSURE, `${label}: ${score} <= ${MAX_EXPOSURE}`)
      if (withDropIn) t.match(r.stdout, /✗ CapabilityBoundingSet=~CAP_NET_ADMIN/, 'the drop-in is really applied')
      else t.match(r.stdout, /✓ CapabilityBoundingSet=~CAP_NET_ADMIN/)
    }
    // The recorded figures must be the measured ones.
    const recorded = readFileSync(SCORE_FILE, 'utf8')
    for (const [label, score] of Object.entries(scores)) {
      t.match(recorded, new RegExp(`\\| \`${label.replace(/[.+]/g, '\\$&')}\` \\| ${score.toFixed(1)} \\|`), `SECURITY-SCORE.md records ${label} = ${score}`)
    }
  })
})

// Own tiny DNS fixtures rather than test/dns/helpers.ts: that module imports src/,
// and this suite should only need the built daemon.
function query(name: string, type: 'A' | 'AAAA'): Buffer {
  return dnsPacket.encode({ type: 'query', id: 0x4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: 'IN' }] })
}

function udpExchange(port: number, msg: Buffer, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4')
    const timer = setTimeout(() => (s.close(), resolve(null)), timeoutMs)
    s.on('message', (m) => (clearTimeout(timer), s.close(), resolve(m)))
    s.send(msg, port, '127.0.0.1')
  })
}

/**
 * An upstream resolver on loopback that answers every A question with 127.0.0.1 and
 * every other type with no records: the SNI proxy dials what an allowed name resolves
 * to, and this test must not make it dial anything off this host.
 */
async function loopbackUpstream(): Promise<{ port: number; close(): Promise<void> }> {
  const sock = dgram.createSocket('udp4')
  sock.on('message', (msg, rinfo) => {
    let q: dnsPacket.Packet
    try {
      q = dnsPacket.decode(msg)
    } catch {
      return
    }
    const question = q.questions?.[0]
    if (!question) return
    const answers: dnsPacket.Answer[] = question.type === 'A' ? [{ type: 'A', name: question.name, ttl: 60, data: '127.0.0.1' }] : []
    sock.send(dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: [question], answers }), rinfo.port, rinfo.address)
  })
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r))
  return { port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) }
}

/** Every group and system call that `systemd-analyze syscall-filter` knows, expanded. */
async function syscallGroups(analyze: string): Promise<Map<string, string[]>> {
  const out = (await run(analyze, ['syscall-filter'])).stdout
  const groups = new Map<string, string[]>()
  let current: string[] | null = null
  for (const raw of out.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    if (!raw.startsWith(' ') && line.startsWith('@')) {
      current = []
      groups.set(line, current)
    } else if (current) current.push(line)
  }
  return groups
}

function expand(groups: Map<string, string[]>, name: string, seen = new Set<string>()): Set<string> {
  const out = new Set<string>()
  if (seen.has(name)) return out
  seen.add(name)
  for (const m of groups.get(name) ?? []) {
    if (m.startsWith('@')) for (const s of expand(groups, m, seen)) out.add(s)
    else out.add(m)
  }
  return out
}

/**
 * What the unit's SystemCallFilter= lines let through, applied in order as systemd does
 * once the first line made it an allow list: plain lines add, `~` lines remove.
 */
function effectiveFilter(groups: Map<string, string[]>): Set<string> {
  const allowed = new Set<string>()
  const lines = values('SystemCallFilter')
  if (lines[0]?.startsWith('~')) throw new Error('the unit is expected to start with an allow list')
  for (const line of lines) {
    const deny = line.startsWith('~')
    for (const item of line.replace(/^~/, '').split(/\s+/).filter(Boolean)) {
      const calls = item.startsWith('@') ? expand(groups, item) : new Set([item])
      for (const c of calls) deny ? allowed.delete(c) : allowed.add(c)
    }
  }
  return allowed
}

const strace = await which('strace')
// EGRESSD_CLI points the trace at another build (the default is what `npm test` builds).
const cli = process.env.EGRESSD_CLI ?? join(ROOT, 'dist', 'cli.js')
const traceSkip = !analyze
  ? 'systemd-analyze missing (Debian package "systemd")'
  : !strace
    ? 'strace missing (Debian package "strace")'
    : !existsSync(cli)
      ? `${cli} not built (npm run build)`
      : false
if (traceSkip) console.log(`# system calls not traced: ${traceSkip}`)

t.test('every system call the daemon makes passes the unit SystemCallFilter', { skip: traceSkip }, async (t) => {
  if (!analyze || !strace) return
  const allowed = effectiveFilter(await syscallGroups(analyze))
  t.ok(allowed.has('read') && allowed.has('epoll_pwait') && !allowed.has('reboot') && !allowed.has('setuid'), 'the filter expands as expected')

  // The daemon with every listener on loopback, an upstream it can reach, and the
  // SNI proxy allowed to dial loopback, then driven through startup, DNS over UDP and
  // TCP, a blocked and an allowed TLS hello, a scrape, a SIGHUP reload and SIGTERM.
  const upstream = await loopbackUpstream()
  t.teardown(() => upstream.close())
  let dialled = 0
  const tlsUpstream = net.createServer((s) => {
    dialled++
    s.on('error', () => {})
    s.once('data', () => s.end('not really TLS'))
  })
  await new Promise<void>((r) => tlsUpstream.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => tlsUpstream.close(() => r())))
  const [dnsPort, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), 'egressd-strace-'))
  const config = join(dir, 'egressd.yaml')
  writeFileSync(
    config,
    [
      'dns:',
      `  listen: ["127.0.0.1:${dnsPort}"]`,
      `  upstreams: ["127.0.0.1:${upstream.port}"]`,
      '  rebind_exempt: ["allowed.example", "*.allowed.example"]',
      'sni:',
      `  listen: ["127.0.0.1:${sniPort}"]`,
      `  upstream_port: ${(tlsUpstream.address() as net.AddressInfo).port}`,
      '  allow_private_destinations: true',
      'metrics:',
      `  listen: "127.0.0.1:${metricsPort}"`,
      'allow: ["allowed.example", "*.allowed.example"]',
      '',
    ].join('\n'),
  )
  const trace = join(dir, 'strace.out')
  // NOTIFY_SOCKET makes the daemon run systemd-notify, which then runs under the same
  // filter; nothing listens there, so it fails after its syscalls are made.
  const proc = spawn(strace, ['-f', '-qq', '-s', '256', '-o', trace, process.execPath, cli, 'run', '-c', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NOTIFY_SOCKET: join(dir, 'notify') },
  })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)))
  let nodePid = 0
  t.teardown(() => {
    if (nodePid > 0 && proc.exitCode === null) process.kill(nodePid, 'SIGKILL')
    if (proc.exitCode === null) proc.kill('SIGKILL')
  })

  const deadline = Date.now() + 20_000
  while (!/"msg":"ready"/.test(out) && Date.now() < deadline && proc.exitCode === null) await sleep(50)
  t.match(out, /"msg":"ready"/, 'the daemon came up under strace')
  // strace's child is node; signals go to node itself.
  const children = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(/\s+/).map(Number)
  nodePid = children[0]!
  t.ok(nodePid > 0, 'found the traced node process')

  const allowedA = await udpExchange(dnsPort, query('www.allowed.example', 'A'), 3000)
  t.ok(allowedA?.includes(Buffer.from([127, 0, 0, 1])), 'an allowed name is answered with its loopback address')
  t.ok(await udpExchange(dnsPort, query('blocked.example', 'A'), 3000), 'a blocked name is answered')
  await new Promise<void>((resolve) => {
    const s = net.connect(dnsPort, '127.0.0.1', () => {
      const q = query('allowed.example', 'AAAA')
      const len = Buffer.alloc(2)
      len.writeUInt16BE(q.length)
      s.end(Buffer.concat([len, q]))
    })
    s.on('data', () => {})
    s.on('error', () => resolve())
    s.on('close', () => resolve())
    setTimeout(() => s.destroy(), 3000).unref()
  })
  for (const name of ['blocked.example', 'www.allowed.example']) {
    await new Promise<void>((resolve) => {
      const s = net.connect(sniPort, '127.0.0.1', () => s.write(buildClientHello({ sni: name })))
      s.on('data', () => {})
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      setTimeout(() => s.destroy(), 3000).unref()
    })
  }
  t.equal(dialled, 1, 'the allowed hello was proxied to the loopback upstream, the blocked one not')
  const scrape = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text())
  t.match(scrape, /egressd_dns_queries_total\{verdict="blocked"\} [1-9]/, 'the traffic was counted')
  process.kill(nodePid, 'SIGHUP')
  const reloadDeadline = Date.now() + 10_000
  while (!/configuration reloaded/.test(out) && Date.now() < reloadDeadline) await sleep(50)
  if (!t.match(out, /configuration reloaded/, 'reloaded')) t.comment(out.slice(-3000))
  process.kill(nodePid, 'SIGTERM')
  const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)])
  t.equal(code, 0, 'stopped cleanly')

  const calls = new Map<string, number>()
  const procFiles = new Set<string>()
  const offHost: string[] = []
  for (const line of readFileSync(trace, 'utf8').split('\n')) {
    const m = /^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)/.exec(line)
    if (!m) continue
    calls.set(m[1]!, (calls.get(m[1]!) ?? 0) + 1)
    const p = /"(\/proc\/[^"]*)"/.exec(line)
    if (p) procFiles.add(p[1]!)
    const dest = /^\d+\s+(?:connect|sendto|sendmsg)\(.*?inet(?:_pton\(AF_INET6, |_addr\()"([^"]+)"/.exec(line)
    if (dest && !/^(?:127\.|::1$|::ffff:127\.)/.test(dest[1]!)) offHost.push(dest[1]!)
  }
  t.same(offHost, [], 'the daemon addressed nothing but loopback')
  t.comment(`traced ${calls.size} distinct system calls, ${statSync(trace).size} bytes of trace`)
  // The trace is real only if it saw the daemon work: sockets, datagrams, a child.
  for (const expected of [['bind'], ['accept4', 'accept'], ['recvmsg', 'recvfrom', 'recvmmsg'], ['sendmsg', 'sendto', 'sendmmsg'], ['execve'], ['epoll_pwait', 'epoll_wait']]) {
    t.ok(expected.some((c) => calls.has(c)), `the trace saw ${expected.join(' or ')}`)
  }
  const outside = [...calls.keys()].filter((c) => !allowed.has(c)).sort()
  // Calls outside the filter get EPERM (SystemCallErrorNumber=EPERM); none is expected.
  t.same(outside, [], `system calls outside the unit's filter: ${outside.join(', ') || 'none'}`)
  t.comment(`system calls seen: ${[...calls.keys()].sort().join(' ')}`)

  // The unit leaves out ProcSubset=pid because of these reads; if they ever stop, it
  // can come back (and the exposure score drops by 0.1).
  const global = [...procFiles].filter((p) => !/^\/proc\/(?:self|thread-self|\d+)(?:\/|$)/.test(p)).sort()
  t.comment(`files under /proc outside the per-process part: ${global.join(', ') || 'none'}`)
  if (global.length > 0) t.same(values('ProcSubset'), [], 'no ProcSubset=pid while the daemon reads them')
})
