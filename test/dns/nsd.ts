/**
 * A real authoritative server for tests: Debian's nsd on 127.0.0.1 serving one zone from
 * text, unprivileged (no chroot, no user switch, no database), UDP and TCP on one port.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import dgram from 'node:dgram'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { HostPort } from '../../src/net/host-port.js'
import { query, udpExchange } from './helpers.js'

export interface Nsd {
  port: number
  hostPort: HostPort
  close(): Promise<void>
}

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4')
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))
  const port = s.address().port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

/** Starts nsd with `zone` (zone file text) as `origin`; resolves once it answers a query (at most 5 s). */
export async function startNsd(origin: string, zone: string): Promise<Nsd> {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-nsd-'))
  writeFileSync(join(dir, 'zone'), zone)
  const port = await freePort()
  writeFileSync(
    join(dir, 'nsd.conf'),
    `server:
  ip-address: 127.0.0.1@${port}
  username: ""
  chroot: ""
  zonesdir: "${dir}"
  database: ""
  pidfile: "${dir}/nsd.pid"
  xfrdfile: "${dir}/xfrd.state"
  zonelistfile: "${dir}/zone.list"
  logfile: "${dir}/nsd.log"
  server-count: 1
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: ${origin}
  zonefile: zone
`,
  )
  const child: ChildProcess = spawn('nsd', ['-d', '-c', join(dir, 'nsd.conf')], { stdio: 'ignore' })
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  const close = async () => {
    if (child.exitCode === null) child.kill('SIGTERM')
    await exited
  }
  const deadline = Date.now() + 5000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break
    if ((await udpExchange(port, query(origin, 'SOA'), 200)) !== null) return { port, hostPort: { host: '127.0.0.1', port, family: 4 }, close }
  }
  await close()
  throw new Error(`nsd did not answer on 127.0.0.1:${port}`)
}
