/**
 * The TLS backend every target ends at: nginx when it is there (installed with apt when
 * missing and we are root), so that the backend is native code and not the bottleneck;
 * a Node https server in a child process otherwise. Both serve `/small` (a few bytes,
 * then close) and `/big` (the BIG_BYTES file) for `bench.example` on 127.0.0.1.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, openSync, writeSync, closeSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import type { Pki } from './pki.js'
import { spawnPinned, waitForPort, type Child } from './procs.js'

export const SMALL_BODY = 'ok bench.example\n'

export interface Backend {
  readonly kind: 'nginx' | 'node'
  readonly version: string
  readonly port: number
  readonly child: Child
}

/** Byte `i` of the big body; the client checks every byte it receives against it. */
export function bigBody(bytes: number): Buffer {
  const b = Buffer.allocUnsafe(bytes)
  // A 251-byte period (prime) so a chunk shifted by any power-of-two offset mismatches.
  const period = Buffer.allocUnsafe(251)
  for (let i = 0; i < 251; i++) period[i] = (i * 7 + 13) & 0xff
  for (let off = 0; off < bytes; off += 251) period.copy(b, off, 0, Math.min(251, bytes - off))
  return b
}

function writeBigFile(file: string, body: Buffer): void {
  const fd = openSync(file, 'w')
  try {
    for (let off = 0; off < body.length; off += 1 << 20) writeSync(fd, body, off, Math.min(1 << 20, body.length - off))
  } finally {
    closeSync(fd)
  }
}

function which(cmd: string): string | null {
  try {
    return execFileSync('bash', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null
  } catch {
    return null
  }
}

/** nginx's path, installing Debian's `nginx` package first if it is missing and we may. */
export function ensureNginx(log: (msg: string) => void): string | null {
  const found = which('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : null)
  if (found || process.getuid?.() !== 0) return found
  log('nginx missing: apt-get install nginx (the policy-rc.d of this image keeps the service from starting)')
  try {
    execFileSync('bash', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx'],
      { stdio: 'ignore', timeout: 240_000 })
  } catch {
    log('apt-get install nginx failed: using the Node backend')
  }
  return which('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : null)
}

function nginxConf(dir: string, pki: Pki, port: number, bigFile: string, nofile: number): string {
  return `# egressd SNI benchmark backend; generated.
daemon off;
# One process, no master: the benchmark pins it to a core and reads its CPU time.
master_process off;
worker_rlimit_nofile ${nofile};
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events {
  worker_connections ${Math.max(1024, nofile - 64)};
  multi_accept on;
}
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  sendfile on;
  tcp_nopush on;
  # Idle spliced connections are held for a while before a request is sent on them.
  client_header_timeout 600s;
  keepalive_timeout 600s;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port} ssl backlog=4096;
    server_name bench.example;
    ssl_certificate ${pki.certFile};
    ssl_certificate_key ${pki.keyFile};
    # Every connection a full handshake, for all three targets alike.
    ssl_session_cache off;
    ssl_session_tickets off;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_buffer_size 16k;
    location = /small { return 200 "${SMALL_BODY.replace('\n', '\\n')}"; }
    location = /big { alias ${bigFile}; }
  }
}
`
}

export async function startBackend(opts: {
  dir: string
  pki: Pki
  port: number
  core: number
  bigBytes: number
  big: Buffer
  nofile: number
  prefer: 'nginx' | 'node'
  log: (msg: string) => void
}): Promise<Backend> {
  const nginx = opts.prefer === 'nginx' ? ensureNginx(opts.log) : null
  if (nginx) {
    const bigFile = join(opts.dir, 'big.bin')
    writeBigFile(bigFile, opts.big)
    const conf = join(opts.dir, 'nginx.conf')
    writeFileSync(conf, nginxConf(opts.dir, opts.pki, opts.port, bigFile, opts.nofile))
    const version = execFileSync('bash', ['-c', `${nginx} -v 2>&1`], { encoding: 'utf8' })
    const child = spawnPinned('nginx', opts.core, nginx, ['-e', join(opts.dir, 'nginx-error.log'), '-p', opts.dir, '-c', conf])
    await waitForPort(opts.port, child)
    return { kind: 'nginx', version: version.trim().replace(/^nginx version: /, ''), port: opts.port, child }
  }
  const script = fileURLToPath(new URL('./node-backend.js', import.meta.url))
  const child = spawnPinned('node-backend', opts.core, process.execPath,
    [script, String(opts.port), opts.pki.certFile, opts.pki.keyFile, String(opts.bigBytes)])
  await waitForPort(opts.port, child)
  return { kind: 'node', version: `node ${process.version}`, port: opts.port, child }
}
