/**
 * The status page: one object owning the event ring, the traffic sampler and the event
 * streams, and the HTTP routes that serve them on the metrics listener. Read-only: no
 * route changes the policy. The daemon builds it in src/daemon/components.ts and feeds
 * it through `tap` (decision lines), `apply` (a reload) and `reloadFailed`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Registry } from 'prom-client'
import type { UiConfig } from '../config/types.js'
import { upstreamLabel } from '../config/upstream.js'
import type { UiView } from './view.js'
import type { DecisionEvent, DecisionTap } from '../log/decision.js'
import type { Logger } from '../log/logger.js'
import { version } from '../version.js'
import { accessFor, bearerMatches, hostHeaderIsLoopback, UI_DEFAULTS, type Access } from './access.js'
import { EventRing, top, type RingEvent } from './event-ring.js'
import { proposalYaml } from './proposal.js'
import { rates, readRegistry, SAMPLE_INTERVAL_MS, SampleRing, type Reading } from './sampler.js'
import { frame, MAX_BUFFERED_BYTES, SseHub } from './sse.js'
import { StaticFiles } from './static-files.js'

export type RouteHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => void

/** Live facts the page shows that belong to other components. */
export interface StatusSources {
  listeners(): { dns: string[]; sni: string[]; metrics: string | null }
  /** null when the nftables sink is off; `elements`: set elements the sink wrote and has not seen expire. */
  firewall(): { table: string; elements: number } | null
}

export interface StatusPageDeps {
  readonly registry: Registry
  readonly log: Logger
  readonly sources: StatusSources
  readonly now?: () => number
}

/** /api/events returns at most this many per call (the ring may hold up to 100 000). */
const EVENTS_PAGE_MAX = 5_000
/**
 * The proposal is computed at most this often, over at most the newest PROPOSAL_EVENTS
 * events, and shared by every page: one computation over 2 000 distinct names took
 * 15-50 ms on the loaded test machine, so five pages asking every 3 s each would
 * otherwise cost more than the DNS traffic they watch (bench/RESULTS.md, status page).
 */
const PROPOSAL_MIN_INTERVAL_MS = 5_000
const PROPOSAL_EVENTS = 5_000
const TOP_N = 10

export class StatusPage {
  readonly ring: EventRing
  readonly samples = new SampleRing()
  readonly hub: SseHub
  private compiled: UiView
  private ui: UiConfig
  private reload: { at: number; ok: boolean; errors: string[] }
  private readonly startedAt: number
  private readonly now: () => number
  private sampler: NodeJS.Timeout | null = null
  private last: Reading | null = null
  private readonly files = new StaticFiles()
  private proposalCache: { yaml: string; seq: number; at: number; compiled: UiView } | null = null

  constructor(
    compiled: UiView,
    private readonly deps: StatusPageDeps,
  ) {
    this.now = deps.now ?? Date.now
    this.compiled = compiled
    this.ui = compiled.config.ui ?? UI_DEFAULTS
    this.ring = new EventRing(this.ui.eventsMax, this.now)
    this.hub = new SseHub(this.ui.clientsMax)
    this.startedAt = this.now()
    this.reload = { at: this.startedAt, ok: true, errors: [] }
    // Serialised once for all pages, and only when a page is open.
    this.ring.subscribe((e) => {
      if (this.hub.size > 0) this.hub.publish(frame('decision', JSON.stringify(e), e.seq))
    })
  }

  /**
   * The DecisionTap for DNS and SNI. Allowed decisions are left out: at `log.level:
   * debug` every allowed query writes a line, and they would push the blocked ones out.
   */
  readonly tap: DecisionTap = (event: DecisionEvent): void => {
    if (event.verdict !== 'allowed' && this.access !== 'disabled') this.ring.push(event)
  }

  get access(): Access {
    return accessFor(this.ui, this.compiled.config.metrics.listen)
  }

  start(): Promise<void> {
    const tick = (): void => {
      const time = this.now()
      readRegistry(this.deps.registry, time).then(
        (reading) => {
          if (this.last !== null) {
            const s = rates(this.last, reading)
            this.samples.add(s)
            if (this.hub.size > 0) this.hub.publish(frame('sample', JSON.stringify(s)))
          }
          this.last = reading
        },
        (err: unknown) => this.deps.log.warn({ err }, 'status page: reading the metrics failed'),
      )
    }
    tick()
    this.sampler = setInterval(tick, SAMPLE_INTERVAL_MS)
    this.sampler.unref()
    return Promise.resolve()
  }

  stop(): Promise<void> {
    if (this.sampler !== null) clearInterval(this.sampler)
    this.sampler = null
    this.hub.closeAll()
    return Promise.resolve()
  }

  apply(next: UiView): void {
    this.compiled = next
    this.ui = next.config.ui ?? UI_DEFAULTS
    if (this.ui.eventsMax !== this.ring.capacity) this.ring.resize(this.ui.eventsMax)
    this.hub.maxClients = this.ui.clientsMax
    this.reload = { at: this.now(), ok: true, errors: [] }
    if (this.access === 'disabled' || this.access === 'off') this.hub.closeAll()
    else this.hub.publish(frame('state', '{}'))
  }

  reloadFailed(errors: readonly string[]): void {
    this.reload = { at: this.now(), ok: false, errors: [...errors] }
    this.hub.publish(frame('state', '{}'))
  }

  /** Path → handler, for the metrics listener's route table. */
  routes(): Map<string, RouteHandler> {
    const page = (path: string): RouteHandler => (req, res) => this.guard(req, res, false) && this.files.serve(path, res)
    const api = (handler: RouteHandler): RouteHandler => (req, res, url) => this.guard(req, res, true) && handler(req, res, url)
    return new Map<string, RouteHandler>([
      ['/', page('index.html')],
      ['/index.html', page('index.html')],
      ['/app.js', page('app.js')],
      ['/style.css', page('style.css')],
      ['/api/state', api((_req, res) => json(res, this.state()))],
      ['/api/events', api((_req, res, url) => json(res, this.events(url)))],
      ['/api/stream', api((req, res, url) => this.stream(req, res, url))],
      ['/api/proposal', api((_req, res) => this.proposal(res))],
    ])
  }

  /** Whether the request may go on; otherwise the answer has been sent. */
  private guard(req: IncomingMessage, res: ServerResponse, api: boolean): boolean {
    const access = this.access
    if (access === 'open') {
      if (hostHeaderIsLoopback(req.headers.host)) return true
      res.writeHead(403, { 'content-type': 'text/plain' }).end('the status page answers only to Host 127.0.0.1, [::1] or localhost on a loopback listener (a guard against DNS rebinding)\n')
      return false
    }
    if (access === 'disabled') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; the status page is off (ui.enabled: false)\n')
      return false
    }
    if (access === 'off') {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(
        'the status page is off: metrics.listen is not a loopback address and ui.token_file is not set.\n' +
          'Set ui.token_file to a file holding a token (openssl rand -hex 32 > FILE) and reload, or listen on 127.0.0.1 and use ssh -L.\n',
      )
      return false
    }
    if (!api || bearerMatches(req.headers.authorization, this.ui.tokenSha256)) return true
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="egressd"' }).end('a bearer token is needed (Authorization: Bearer <the content of ui.token_file>)\n')
    return false
  }

  /** Everything the page shows at load, and scripts read. */
  state(): object {
    const c = this.compiled
    const config = c.config
    const now = this.now()
    const events = this.ring.since(0)
    return {
      version: version(),
      now,
      startedAt: this.startedAt,
      uptimeSeconds: Math.round((now - this.startedAt) / 1000),
      config: {
        file: config.file,
        hash: c.hash,
        rules: c.groups.ruleCount,
        mode: c.groups.default.mode,
        groups: c.groups.groups.map((g) => ({ name: g.name, mode: g.mode, rules: g.policy.size, clients: g.clients.map((x) => x.text) })),
      },
      reload: this.reload,
      listeners: this.deps.sources.listeners(),
      upstreams: config.dns.upstreams.map(upstreamLabel),
      firewall: this.deps.sources.firewall(),
      access: this.access,
      limits: {
        eventsMax: this.ring.capacity,
        clientsMax: this.hub.maxClients,
        streamBufferBytes: MAX_BUFFERED_BYTES,
        sampleIntervalSeconds: SAMPLE_INTERVAL_MS / 1000,
        samplesKept: this.samples.capacity,
      },
      streams: { ...this.hub.stats },
      events: { held: events.length, lastSeq: this.ring.lastSeq },
      top: {
        names: top(events, (e) => e.name, TOP_N),
        devices: top(events, (e) => e.client, TOP_N),
      },
      traffic: this.samples.all(),
    }
  }

  /** `?since=SEQ&limit=N`: events after SEQ, oldest first. */
  private events(url: URL): object {
    const since = wholeNumber(url.searchParams.get('since'), 0)
    const limit = Math.min(wholeNumber(url.searchParams.get('limit'), EVENTS_PAGE_MAX), EVENTS_PAGE_MAX)
    const events = this.ring.since(since, limit)
    return { lastSeq: this.ring.lastSeq, held: this.ring.size, events }
  }

  /** The live stream; `Last-Event-ID` (or `?since=`) replays what the ring still holds after it. */
  private stream(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const header = req.headers['last-event-id']
    const since = wholeNumber(typeof header === 'string' ? header : url.searchParams.get('since'), this.ring.lastSeq)
    const backlog = this.ring.since(since).map((e: RingEvent) => frame('decision', JSON.stringify(e), e.seq)).join('')
    this.hub.open(req, res, backlog)
  }

  /** The proposal and the newest event it covers (`x-egressd-seq`: a page behind it asks again later). */
  private proposal(res: ServerResponse): void {
    const now = this.now()
    let c = this.proposalCache
    const stale = c === null || c.compiled !== this.compiled || (c.seq !== this.ring.lastSeq && now - c.at >= PROPOSAL_MIN_INTERVAL_MS)
    if (stale) {
      c = this.proposalCache = { yaml: proposalYaml(this.ring.since(0, PROPOSAL_EVENTS), this.compiled), seq: this.ring.lastSeq, at: now, compiled: this.compiled }
    }
    res.writeHead(200, {
      'content-type': 'text/yaml; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-egressd-seq': String(c!.seq),
    }).end(c!.yaml)
  }
}

function json(res: ServerResponse, value: object): void {
  res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(JSON.stringify(value))
}

function wholeNumber(text: string | null, fallback: number): number {
  return text !== null && /^[0-9]{1,15}$/.test(text) ? Number(text) : fallback
}
