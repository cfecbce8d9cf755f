/**
 * A real unbound on 127.0.0.1 answering a small local zone over plain DNS, DNS over TLS
 * (tls-port) and DNS over HTTPS (https-port, when the build has libnghttp2), with a
 * certificate from a test CA. No recursion: every name outside the zone is REFUSED.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { createTestCa, type TestCa } from './certs.js'

const run = promisify(execFile)

export interface Unbound {
  /** Plain DNS (UDP and TCP), DNS over TLS, DNS over HTTPS (0 when not built in). */
  readonly port: number
  readonly tlsPort: number
  readonly httpsPort: number
  readonly ca: TestCa
  /** The CA as a file, for dns.upstream_ca_file. */
  readonly caFile: string
  readonly dir: string
  readonly pid: number
  stop(): Promise<void>
}

/** Why unbound cannot be used here, or null. */
export async function unboundMissing(): Promise<string | null> {
  try {
    await run('unbound', ['-V'])
    return null
  } catch {
    return 'unbound is not installed (apt-get install unbound)'
  }
}

export async function unboundHasHttps(): Promise<boolean> {
  const { stdout } = await run('unbound', ['-V'])
  return stdout.includes('libnghttp2')
}

async function freePort(): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as net.AddressInfo).port
  await new Promise((r) => srv.close(r))
  return port
}

/**
 * Starts unbound with `records` (zone-file lines, e.g. `a.dot.test. 300 IN A 192.0.2.1`)
 * in the static local zone `zone`; the certificate carries `certNames` and 127.0.0.1.
 */
export async function startUnbound(opts: {
  zone: string
  records: string[]
  certNames: string[]
  threads?: number
  /** unbound's local-zone type: static (default) answers the records only; redirect answers every name below with the zone's own records. */
  zoneType?: 'static' | 'redirect'
}): Promise<Unbound> {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-unbound-'))
  const ca = createTestCa('egressd unbound test CA')
  const leaf = ca.issue(opts.certNames, { ips: ['127.0.0.1'] })
  writeFileSync(join(dir, 'cert.pem'), leaf.cert)
  writeFileSync(join(dir, 'key.pem'), leaf.key)
  const caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, ca.cert)
  const https = await unboundHasHttps()
  const [port, tlsPort, httpsPort] = [await freePort(), await freePort(), https ? await freePort() : 0]
  const conf = [
    'server:',
    '  username: ""',
    '  chroot: ""',
    `  directory: "${dir}"`,
    '  pidfile: ""',
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 0',
    '  do-daemonize: no',
    `  num-threads: ${opts.threads ?? 1}`,
    '  do-ip6: no',
    `  port: ${port}`,
    `  interface: 127.0.0.1@${port}`,
    `  interface: 127.0.0.1@${tlsPort}`,
    ...(https ? [`  interface: 127.0.0.1@${httpsPort}`, `  https-port: ${httpsPort}`] : []),
    `  tls-port: ${tlsPort}`,
    `  tls-service-key: "${join(dir, 'key.pem')}"`,
    `  tls-service-pem: "${join(dir, 'cert.pem')}"`,
    '  access-control: 127.0.0.0/8 allow',
    '  module-config: "iterator"',
    '  incoming-num-tcp: 64',
    // Pipelined queries per TLS or HTTP/2 connection answered concurrently.
    '  http-max-streams: 256',
    '  tcp-idle-timeout: 30000',
    `  local-zone: "${opts.zone}" ${opts.zoneType ?? 'static'}`,
    ...opts.records.map((r) => `  local-data: "${r}"`),
    'remote-control:',
    '  control-enable: no',
  ].join('\n')
  writeFileSync(join(dir, 'unbound.conf'), conf + '\n')
  const child: ChildProcess = spawn('unbound', ['-d', '-p', '-c', join(dir, 'unbound.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  // Ready when the TLS port accepts (bound after every other interface).
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`unbound exited: ${stderr}`)
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(tlsPort, '127.0.0.1')
      s.once('connect', () => (s.destroy(), r(true)))
      s.once('error', () => r(false))
    })
    if (ok) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`unbound did not start: ${stderr}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    port,
    tlsPort,
    httpsPort,
    ca,
    caFile,
    dir,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
    },
  }
}
