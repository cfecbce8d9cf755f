/**
 * One vector suite for every matcher implementation: a policy shaped like the vendor
 * guides plus adversarial entries, and names with the deciding rule each must get.
 */
import { DEFAULT_PORTS, type PolicyEntry } from '../../src/policy/types.js'

const allow = (entry: string): PolicyEntry => ({ action: 'allow', entry, ports: DEFAULT_PORTS, source: `vectors:${entry}` })
const deny = (entry: string): PolicyEntry => ({ action: 'deny', entry, ports: DEFAULT_PORTS, source: `vectors:${entry}` })

export const ENTRIES: readonly PolicyEntry[] = [
  allow('ccon-manager.prod.disruptive-technologies.com'),
  allow('*.balena-cloud.com'),
  allow('{0..3}.resinio.pool.ntp.org'),
  allow('time{1,2,3,4}.google.com'),
  allow('*.Example.COM.'),
  allow('api.example.com'),
  allow('*.deep.example.com'),
  allow('bücher.example'),
  allow('x-_-y.test'),
  allow('-lead.test'),
  allow('allowed.evil.example.com'),
  allow('both.example.org'),
  allow('api.example.com'), // duplicate: the first one decides
  deny('*.evil.example.com'),
  deny('blocked.example.com'),
  deny('ads.balena-cloud.com'),
  deny('*.tracker.deep.example.com'),
  deny('both.example.org'),
]

const L63 = 'a'.repeat(63)
/** `<labels>.example.com` of exactly `n` bytes (n ≥ 13). */
function nameOfLength(n: number): string {
  let s = 'example.com'
  while (s.length < n) {
    const room = n - s.length - 1
    s = 'x'.repeat(Math.min(63, Math.max(1, room))) + '.' + s
  }
  return s
}
export const NAME_253 = nameOfLength(253)
export const NAME_254 = nameOfLength(254)

/**
 * [name, deciding rule as `action pattern` or null, hasAllowedBelow]. hasAllowedBelow is
 * RFC 8020's question: does some allowed name exist strictly below? An exact deny under
 * an allow wildcard (ads.balena-cloud.com, blocked.example.com) has allowed names below
 * it, so DNS must answer NODATA, never NXDOMAIN.
 */
export const TEXT_VECTORS: ReadonlyArray<readonly [string, string | null, boolean]> = [
  ['ccon-manager.prod.disruptive-technologies.com', 'allow ccon-manager.prod.disruptive-technologies.com', false],
  ['CCON-Manager.Prod.Disruptive-Technologies.COM.', 'allow ccon-manager.prod.disruptive-technologies.com', false],
  ['prod.disruptive-technologies.com', null, true],
  ['disruptive-technologies.com', null, true],
  ['com', null, true],
  ['x.ccon-manager.prod.disruptive-technologies.com', null, false],
  ['balena-cloud.com', null, true],
  ['api.balena-cloud.com', 'allow *.balena-cloud.com', true],
  ['a.b.c.balena-cloud.com', 'allow *.balena-cloud.com', true],
  ['badbalena-cloud.com', null, false],
  ['balena-cloud.com.evil.net', null, false],
  ['ads.balena-cloud.com', 'deny ads.balena-cloud.com', true], // x.ads.balena-cloud.com is allowed
  ['x.ads.balena-cloud.com', 'allow *.balena-cloud.com', true],
  ['0.resinio.pool.ntp.org', 'allow 0.resinio.pool.ntp.org', false],
  ['3.resinio.pool.ntp.org', 'allow 3.resinio.pool.ntp.org', false],
  ['4.resinio.pool.ntp.org', null, false],
  ['resinio.pool.ntp.org', null, true],
  ['pool.ntp.org', null, true],
  ['time3.google.com', 'allow time3.google.com', false],
  ['time5.google.com', null, false],
  ['google.com', null, true],
  ['example.com', null, true],
  ['api.example.com', 'allow api.example.com', true],
  ['www.example.com', 'allow *.example.com', true],
  ['WWW.EXAMPLE.COM.', 'allow *.example.com', true],
  ['x.deep.example.com', 'allow *.deep.example.com', true],
  ['deep.example.com', 'allow *.example.com', true],
  ['a.evil.example.com', 'deny *.evil.example.com', false],
  ['allowed.evil.example.com', 'deny *.evil.example.com', false],
  ['evil.example.com', 'allow *.example.com', true],
  ['blocked.example.com', 'deny blocked.example.com', true],
  ['x.blocked.example.com', 'allow *.example.com', true],
  ['x.tracker.deep.example.com', 'deny *.tracker.deep.example.com', false],
  ['tracker.deep.example.com', 'allow *.deep.example.com', false],
  ['both.example.org', 'deny both.example.org', false],
  ['example.org', null, true],
  ['xn--bcher-kva.example', 'allow xn--bcher-kva.example', false],
  ['XN--BCHER-KVA.EXAMPLE', 'allow xn--bcher-kva.example', false],
  ['bücher.example', null, false], // match takes text as is; callers convert Unicode first
  ['x-_-y.test', 'allow x-_-y.test', false],
  ['-lead.test', 'allow -lead.test', false],
  ['lead.test', null, false],
  ['example.com..', null, false],
  ['.www.example.com', null, false],
  ['www..example.com', null, false],
  ['..', null, false],
  ['a b.example.com', null, false],
  ['a\u0000b.example.com', null, false],
  ['ü.example.com', null, false],
  ['a*.example.com', null, false],
  ['*.example.com', null, false],
  ['a/b.example.com', null, false],
  ['x.y z.example.com', null, false],
  ['www.exa mple.com', null, false],
  ['\u212a.example.com', null, false], // Kelvin sign: lowercases to ASCII "k" in JS, still not a name byte
  [`${L63}.example.com`, 'allow *.example.com', true],
  [`${L63}a.example.com`, null, false],
  [`${L63}a.x.example.com`, null, false],
  [NAME_253, 'allow *.example.com', false],
  [NAME_253 + '.', 'allow *.example.com', false],
  [NAME_254, null, false],
  ['', null, true],
  ['.', null, true],
]
