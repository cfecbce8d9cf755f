import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import { ListenError } from '../errors.js'
import { formatHostPort, type HostPort } from '../net/host-port.js'

/** A further GET path on this listener (the status page, src/ui): path → handler. */
export type Routes = ReadonlyMap<string, (req: IncomingMessage, res: ServerResponse, url: URL) => void>

/**
 * GET /metrics (Prometheus text), /healthz (the process answers), /readyz (200 once
 * every listener is bound, 503 before and while shutting down), then `routes` (exact
 * paths). Nothing else: 404.
 */
export class MetricsServer {
  private server: Server | null = null
  ready = false

  constructor(
    private readonly registry: Registry,
    private readonly listen: HostPort,
    private readonly routes: Routes = new Map(),
  ) {}

  get address(): AddressInfo | null {
    return (this.server?.address() as AddressInfo | null) ?? null
  }

  start(): Promise<void> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end()
      } else if (path === '/metrics') {
        this.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
          (e: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${e.message}\n`),
        )
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
      } else if (path === '/readyz') {
        res.writeHead(this.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(this.ready ? 'ready\n' : 'not ready\n')
      } else if (this.routes.has(path)) {
        this.routes.get(path)!(req, res, new URL(req.url ?? '/', 'http://egressd'))
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found; try /metrics, /healthz, /readyz${this.routes.has('/') ? ', /' : ''}\n`)
      }
    })
    // A scraper holds few connections; bound them and their header wait anyway. The
    // status page's event streams (at most ui.clients_max ≤ 32) count among the 64.
    server.maxConnections = 64
    server.headersTimeout = 10_000
    server.requestTimeout = 10_000
    this.server = server
    return new Promise((resolve, reject) => {
      const failed = (err: NodeJS.ErrnoException): void => reject(new ListenError('metrics', 'tcp', formatHostPort(this.listen), this.listen.port, err))
      server.once('error', failed)
      server.listen({ host: this.listen.host, port: this.listen.port }, () => {
        server.off('error', failed)
        resolve()
      })
    })
  }

  stop(): Promise<void> {
    const server = this.server
    if (server === null) return Promise.resolve()
    this.ready = false
    return new Promise((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }
}
