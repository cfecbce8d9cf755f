/**
 * Who may read the status page and its API. Pure: the listener address and `ui:` in,
 * one of four answers out, used by the server per request and by `egressd validate`.
 *
 *   ui.enabled false                 → disabled (404, as before the page existed)
 *   loopback listener                → open (the host's own users; ssh -L to reach it)
 *   other listener + ui.token_file   → token (Authorization: Bearer …)
 *   other listener, no token file    → off (403 with a hint)
 *
 * The static page itself carries no data and is served in `token` mode too: it asks for
 * the token and sends it with every API call.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { UiConfig } from '../config/types.js'
import { isLoopbackIp } from '../net/address.js'
import { formatHostPort, type HostPort } from '../net/host-port.js'

export type Access = 'open' | 'token' | 'off' | 'disabled'

export const UI_DEFAULTS: UiConfig = { enabled: true, tokenFile: null, tokenSha256: null, eventsMax: 2000, clientsMax: 8 }

export function accessFor(ui: UiConfig, listen: HostPort | null): Access {
  if (!ui.enabled || listen === null) return 'disabled'
  if (isLoopback(listen.host)) return 'open'
  return ui.tokenSha256 !== null ? 'token' : 'off'
}

/** 127.0.0.0/8 and ::1 (also as ::ffff:127.x), or the name `localhost`: only this host can connect. */
export function isLoopback(host: string): boolean {
  return host.toLowerCase() === 'localhost' || isLoopbackIp(host)
}

/**
 * Whether a request's Host header names this host by a loopback address or `localhost`
 * (with any port). On an open (loopback) listener anything else is refused: a web page
 * whose name an attacker re-points at 127.0.0.1 (DNS rebinding) would otherwise read the
 * API as same-origin from the operator's own browser.
 */
export function hostHeaderIsLoopback(host: string | undefined): boolean {
  if (host === undefined) return false
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+)(:\d{1,5})?$/.exec(host)
  if (m === null) return false
  const name = m[1]!.replace(/^\[|\]$/g, '')
  return isLoopback(name)
}

/**
 * Whether an `Authorization` header carries the token whose sha256 is `expectedHex`.
 * Both sides are compared as sha256 digests, so the comparison is constant time and of
 * equal length whatever was sent (timingSafeEqual throws on unequal lengths).
 */
export function bearerMatches(header: string | undefined, expectedHex: string | null): boolean {
  if (expectedHex === null || header === undefined) return false
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
  if (m === null) return false
  const got = createHash('sha256').update(m[1]!).digest()
  const want = Buffer.from(expectedHex, 'hex')
  return got.length === want.length && timingSafeEqual(got, want)
}

/** One line for `egressd validate`. */
export function describeAccess(ui: UiConfig, listen: HostPort | null): string {
  const where = listen === null ? '' : `http://${formatHostPort(listen)}/`
  switch (accessFor(ui, listen)) {
    case 'disabled':
      return listen === null ? 'status page: off (metrics.listen is off)' : 'status page: off (ui.enabled: false)'
    case 'open':
      return `status page: ${where}, open (loopback listener)`
    case 'token':
      return `status page: ${where}, bearer token from ${ui.tokenFile} required (listener is not loopback)`
    case 'off':
      return `status page: off at ${where}: the listener is not loopback and ui.token_file is not set (403 until it is)`
  }
}
