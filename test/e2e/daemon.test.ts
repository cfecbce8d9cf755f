import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { promisify } from 'node:util'
import { fakeUpstream, hasTool } from '../dns/helpers.js'
import { freePort, startDaemon } from '../helpers/daemon.js'

const run = promisify(execFile)

async function dig(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), '+tries=1', '+time=2', ...args], { timeout: 10_000 })
  return stdout
}

const status = (out: string): string => /status: ([A-Z]+)/.exec(out)?.[1] ?? 'none'

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`)
  return res.text()
}

function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '))
  return line ? Number(line.slice(series.length + 1)) : NaN
}

const noDig = (await hasTool('dig')) ? false : 'dig not installed (Debian dnsutils); .ci/run installs it'

t.test('the built daemon: ready, answers, metrics, reload, bad reload, SIGTERM', { skip: noDig }, async (t) => {
  const upstream = await fakeUpstream((q) => ({ answers: [{ name: q.name, type: 'A', ttl: 300, data: '198.51.100.7' }] as never }))
  t.teardown(() => upstream.close())
  const [dnsPort, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const config = (allow: string[]) => [
    'dns:',
    `  listen: ["127.0.0.1:${dnsPort}"]`,
    `  upstreams: ["127.0.0.1:${upstream.port}"]`,
    'sni:',
    `  listen: ["127.0.0.1:${sniPort}"]`,
    'metrics:',
    `  listen: "127.0.0.1:${metricsPort}"`,
    'presets: [dt-cloud-connector-gen2]',
    `allow: [${allow.map((a) => JSON.stringify(a)).join(', ')}]`,
    '',
  ].join('\n')

  const d = startDaemon(config(['api.example.com', '*.example.net']))
  t.teardown(() => d.stop())
  const ready = await d.waitForLog('ready')
  t.equal(ready.level, 'info')
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status, 200, '/readyz once listening')
  t.equal((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status, 200)

  const allowed = await dig(dnsPort, 'api.example.com', 'A')
  t.equal(status(allowed), 'NOERROR')
  t.match(allowed, /api\.example\.com\.\s+\d+\s+IN\s+A\s+198\.51\.100\.7/)
  t.equal(status(await dig(dnsPort, 'evil.example.org')), 'NXDOMAIN')
  const nodata = await dig(dnsPort, 'prod.disruptive-technologies.com')
  t.equal(status(nodata), 'NOERROR', 'a parent of allowed names is NODATA, never NXDOMAIN')
  t.match(nodata, /ANSWER: 0,/)
  const apex = await dig(dnsPort, 'example.net')
  t.equal(status(apex), 'NOERROR', 'the apex of a wildcard is not allowed, but NODATA: names below it are')
  t.match(apex, /ANSWER: 0,/)

  let metrics = await scrape(metricsPort)
  t.equal(sample(metrics, 'egressd_dns_queries_total{verdict="allowed"}'), 1)
  t.equal(sample(metrics, 'egressd_dns_queries_total{verdict="blocked"}'), 3)
  t.equal(sample(metrics, 'egressd_blocked_total{protocol="dns",name="evil.example.org"}'), 1)
  t.equal(sample(metrics, 'egressd_client_blocked_total{protocol="dns",client="127.0.0.1"}'), 3, 'blocked attempts by device')
  t.equal(sample(metrics, 'egressd_policy_rules'), 10)
  t.match(metrics, /process_resident_memory_bytes \d+/)

  // A reload that removes a name changes the verdict at once.
  writeFileSync(d.file, config(['*.example.net']))
  d.proc.kill('SIGHUP')
  await d.waitForLog('configuration reloaded')
  t.equal(status(await dig(dnsPort, 'api.example.com')), 'NXDOMAIN', 'removed by the reload')
  t.equal(status(await dig(dnsPort, 'a.example.net')), 'NOERROR')

  // A bad file keeps the running policy and says where the problem is.
  writeFileSync(d.file, config(['*.example.net']) + 'dns:\n  listen: []\n' + 'bogus: 1\n')
  d.proc.kill('SIGHUP')
  const failed = await d.waitForLog(/reload failed/)
  t.equal(failed.level, 'error')
  t.match(String(failed.error), new RegExp(`${d.file.replace(/[.]/g, '\\.')}:\\d+:\\d+: `))
  t.equal(status(await dig(dnsPort, 'b.example.net')), 'NOERROR', 'old policy still running')
  metrics = await scrape(metricsPort)
  t.equal(sample(metrics, 'egressd_config_reloads_total{result="success"}'), 1)
  t.equal(sample(metrics, 'egressd_config_reloads_total{result="failure"}'), 1)

  t.equal(await d.stop(), 0, 'SIGTERM exits 0')
  t.ok(d.logs.some((l) => l.msg === 'stopped'))
  for (const l of d.logs) t.type(l.time, 'string', 'every log line is JSON with a time')
})

t.test('a bad configuration at start: exit 2 with file:line:col, nothing bound', async (t) => {
  const d = startDaemon('dns:\n  listen: ["127.0.0.1"]\nallow: ["a.*.example.com"]\n')
  t.equal(await d.exited, 2)
  const lines = d.stderr().trim().split('\n')
  t.equal(lines.length, 2, d.stderr())
  t.match(lines[0], /egressd\.yaml:2:12: dns\.listen: "127\.0\.0\.1" has no port/)
  t.match(lines[1], /egressd\.yaml:3:12: allow: "a\.\*\.example\.com": /)
})

t.test('a listener that cannot be bound: exit 1 with a fatal line', async (t) => {
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => blocker.close())
  const taken = (blocker.address() as { port: number }).port
  const [dnsPort, metricsPort] = [await freePort(), await freePort()]
  const d = startDaemon([
    `dns: { listen: ["127.0.0.1:${dnsPort}"], upstreams: ["127.0.0.1:9"] }`,
    `sni: { listen: ["127.0.0.1:${taken}"] }`,
    `metrics: { listen: "127.0.0.1:${metricsPort}" }`,
    '',
  ].join('\n'))
  t.equal(await d.exited, 1)
  const fatal = d.logs.filter((l) => l.level === 'fatal')
  t.equal(fatal.length, 1, 'one fatal line')
  t.match(fatal[0], {
    msg: new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${taken} \\(sni, tcp\\): address already in use; another process holds it`),
    listener: 'sni', transport: 'tcp', address: `127.0.0.1:${taken}`, reason: 'EADDRINUSE',
  })
  t.equal(fatal[0]!.service, 'egressd', 'the logger\'s own service field is not written a second time (a duplicate JSON key; parsers keep either one)')
  t.notOk(JSON.stringify(fatal[0]).includes('stack'), 'no stack trace')
  t.equal(d.stderr(), '', 'nothing on stderr')
  t.notOk(d.logs.some((l) => l.msg === 'ready'))
})

// Binding port 53 needs root or CAP_NET_BIND_SERVICE; the test holds it itself so the daemon meets EADDRINUSE.
const port53 = await new Promise<import('node:dgram').Socket | null>((resolve) => {
  void import('node:dgram').then(({ createSocket }) => {
    const u = createSocket('udp4')
    u.once('error', () => resolve(null))
    u.bind(53, '127.0.0.2', () => resolve(u))
  })
})
if (port53 !== null) t.teardown(() => port53.close())

t.test('port 53 taken: the hint names systemd-resolved and dnsmasq', { skip: port53 === null ? 'cannot bind 127.0.0.2:53 here (not root): the hint needs port 53 held' : false }, async (t) => {
  const d = startDaemon('dns: { listen: ["127.0.0.2:53"], upstreams: ["127.0.0.1:9"] }\nsni: { listen: [] }\n')
  t.equal(await d.exited, 1)
  t.match(d.logs.find((l) => l.level === 'fatal'), { reason: 'EADDRINUSE', hint: /systemd-resolved.*dnsmasq/ })
})

// A port below 1024 as an unprivileged user: the real EACCES path and its hint. Needs root
// to drop to nobody (setpriv), and a checkout nobody may read.
const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
const nobodySkip = process.getuid?.() !== 0 ? 'not root: cannot drop to an unprivileged user'
  : !(await hasTool('setpriv')) ? 'setpriv is not installed (util-linux)'
    : (await new Promise<boolean>((resolve) => execFile('env', ['-u', 'NODE_OPTIONS', ...asNobody, process.execPath, '-e', `require('fs').accessSync(${JSON.stringify(process.cwd() + '/dist/cli.js')})`], (err) => resolve(err === null))))
      ? false : 'user nobody cannot read this checkout\'s dist/cli.js'

t.test('a port below 1024 without CAP_NET_BIND_SERVICE: one fatal line with the hint, no stack, exit 1', { skip: nobodySkip }, async (t) => {
  const { mkdtempSync, chmodSync } = await import('node:fs')
  const { join } = await import('node:path')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(join(tmpdir(), 'egressd-nobody-'))
  chmodSync(dir, 0o755)
  const file = join(dir, 'egressd.yaml')
  writeFileSync(file, 'dns: { listen: ["127.0.0.1:1023"], upstreams: ["127.0.0.1:9"] }\nsni: { listen: [] }\nmetrics: { listen: null }\nallow: [a.example.com]\n', { mode: 0o644 })
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    // env -u NODE_OPTIONS: tap's process-info hooks would write into .tap/ as nobody and fail.
    execFile('env', ['-u', 'NODE_OPTIONS', ...asNobody, process.execPath, join(process.cwd(), 'dist/cli.js'), 'run', '-c', file], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }))
  })
  t.equal(r.code, 1, r.stderr)
  t.equal(r.stderr, '', 'nothing on stderr')
  const lines = r.stdout.trim().split('\n')
  t.equal(lines.length, 1, 'one line')
  const line = JSON.parse(lines[0]!) as Record<string, unknown>
  t.match(line, {
    level: 'fatal', listener: 'dns', transport: 'udp', address: '127.0.0.1:1023', reason: 'EACCES',
    msg: /^cannot listen on 127\.0\.0\.1:1023 \(dns, udp\): permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE/,
  })
  t.notOk(lines[0]!.includes('stack'), 'no stack trace')
})
