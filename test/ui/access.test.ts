import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseHostPort, type HostPort } from '../../src/net/host-port.js'
import { loadConfig } from '../../src/config/load.js'
import { ConfigErrors } from '../../src/errors.js'
import { accessFor, bearerMatches, describeAccess, hostHeaderIsLoopback, isLoopback, UI_DEFAULTS } from '../../src/ui/access.js'
import { createHash } from 'node:crypto'
import { CLI } from '../helpers/daemon.js'

const hp = (s: string): HostPort => parseHostPort(s) as HostPort
const sha = (s: string): string => createHash('sha256').update(s).digest('hex')

t.test('which access applies', async (t) => {
  const token = { ...UI_DEFAULTS, tokenFile: '/etc/egressd/ui.token', tokenSha256: sha('x'.repeat(32)) }
  t.equal(accessFor(UI_DEFAULTS, hp('127.0.0.1:9153')), 'open')
  t.equal(accessFor(UI_DEFAULTS, hp('127.3.4.5:9153')), 'open')
  t.equal(accessFor(UI_DEFAULTS, hp('[::1]:9153')), 'open')
  t.equal(accessFor(token, hp('127.0.0.1:9153')), 'open', 'a token is not needed on loopback')
  t.equal(accessFor(UI_DEFAULTS, hp('0.0.0.0:9153')), 'off', 'all addresses is not loopback')
  t.equal(accessFor(UI_DEFAULTS, hp('[::]:9153')), 'off')
  t.equal(accessFor(UI_DEFAULTS, hp('192.168.1.1:9153')), 'off')
  t.equal(accessFor(token, hp('192.168.1.1:9153')), 'token')
  t.equal(accessFor({ ...token, enabled: false }, hp('127.0.0.1:9153')), 'disabled')
  t.equal(accessFor(UI_DEFAULTS, null), 'disabled', 'no metrics listener, no page')
  t.ok(isLoopback('::ffff:127.0.0.1'))
  t.notOk(isLoopback('128.0.0.1'))
  t.notOk(isLoopback('127.0.0.1.evil'))
  t.notOk(isLoopback('127.999.0.1'), 'not an address, whatever it starts with')
  t.ok(isLoopback('::ffff:7f00:1'), 'a mapped loopback in hex')
  t.match(describeAccess(UI_DEFAULTS, hp('127.0.0.1:9153')), 'http://127.0.0.1:9153/, open (loopback listener)')
  t.match(describeAccess(token, hp('10.0.0.1:9153')), 'bearer token from /etc/egressd/ui.token required')
  t.match(describeAccess(UI_DEFAULTS, hp('10.0.0.1:9153')), /off at http:\/\/10\.0\.0\.1:9153\/: .* ui\.token_file is not set/)
})

t.test('the bearer check compares digests, so any length is compared in constant time', async (t) => {
  const token = 'f'.repeat(64)
  const want = sha(token)
  t.ok(bearerMatches(`Bearer ${token}`, want))
  t.ok(bearerMatches(`bearer ${token}`, want), 'the scheme is case-insensitive (RFC 9110)')
  t.ok(bearerMatches(`Bearer  ${token} `, want))
  t.notOk(bearerMatches(`Bearer ${token}0`, want), 'longer')
  t.notOk(bearerMatches(`Bearer ${token.slice(1)}`, want), 'shorter')
  t.notOk(bearerMatches(`Bearer ${'e'.repeat(64)}`, want), 'same length, other bytes')
  t.notOk(bearerMatches(token, want), 'no scheme')
  t.notOk(bearerMatches(`Basic ${token}`, want))
  t.notOk(bearerMatches(undefined, want))
  t.notOk(bearerMatches(`Bearer ${token}`, null), 'no token configured: nothing matches')
  t.notOk(bearerMatches('Bearer ', want))
})

t.test('ui keys in the configuration file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-ui-'))
  writeFileSync(join(dir, 'good.token'), '  0123456789abcdef0123  \n')
  writeFileSync(join(dir, 'short.token'), 'abc\n')
  const file = join(dir, 'egressd.yaml')
  const load = (text: string) => {
    writeFileSync(file, text)
    return loadConfig(file, { resolvConf: '/nonexistent' })
  }
  const base = 'dns:\n  upstreams: ["127.0.0.1:53"]\n'
  t.same(load(base).config.ui, UI_DEFAULTS, 'defaults')
  const ui = load(base + 'ui:\n  token_file: good.token\n  events_max: 500\n  clients_max: 4\n').config.ui!
  t.equal(ui.tokenSha256, sha('0123456789abcdef0123'), 'read relative to the configuration, whitespace trimmed, kept as a digest')
  t.equal(ui.tokenFile, 'good.token')
  t.notMatch(JSON.stringify(ui), /0123456789abcdef0123/, 'the token itself is not in the configuration object')
  t.equal(ui.eventsMax, 500)
  t.equal(ui.clientsMax, 4)
  const errors = (text: string): string[] => {
    try {
      load(text)
      return []
    } catch (e) {
      return (e as ConfigErrors).errors.map((x) => x.message)
    }
  }
  t.match(errors(base + 'ui:\n  token_file: short.token\n'), [/egressd\.yaml:4:15: ui\.token_file .*short\.token holds 3 characters; a token needs at least 16/])
  t.match(errors(base + 'ui:\n  token_file: /nonexistent/token\n'), [/:4:15: ui\.token_file: cannot read \/nonexistent\/token: ENOENT/])
  t.match(errors(base + 'ui:\n  clients_max: 100\n'), [/ui\.clients_max/])
  t.match(errors(base + 'ui:\n  events_max: 10\n'), [/ui\.events_max/])
  t.match(errors(base + 'ui:\n  enable: true\n'), [/enable/])
})

t.test('validate says whether the page is open, needs the token, or is off', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'egressd-ui-'))
  writeFileSync(join(dir, 'ui.token'), 'x'.repeat(32))
  const file = join(dir, 'egressd.yaml')
  const run = async (extra: string): Promise<string> => {
    writeFileSync(file, `dns:\n  upstreams: ["127.0.0.1:53"]\n${extra}`)
    return (await promisify(execFile)(process.execPath, [CLI, 'validate', '-c', file])).stdout
  }
  t.match(await run(''), /\nstatus page: http:\/\/127\.0\.0\.1:9153\/, open \(loopback listener\)\n/)
  t.match(await run('metrics:\n  listen: "0.0.0.0:9153"\nui:\n  token_file: ui.token\n'), /status page: http:\/\/0\.0\.0\.0:9153\/, bearer token from ui\.token required/)
  t.match(await run('metrics:\n  listen: "0.0.0.0:9153"\n'), /status page: off at http:\/\/0\.0\.0\.0:9153\/: the listener is not loopback and ui\.token_file is not set/)
  t.match(await run('ui:\n  enabled: false\n'), /status page: off \(ui\.enabled: false\)/)
})

t.test('on an open listener only loopback Host headers are served (DNS rebinding)', async (t) => {
  for (const h of ['127.0.0.1:9153', '127.0.0.1', 'localhost:9153', 'LOCALHOST', '[::1]:9153', '[::1]', '127.8.9.10:1']) t.ok(hostHeaderIsLoopback(h), h)
  for (const h of [undefined, '', 'evil.example:9153', 'evil.example', '127.0.0.1.evil.example', '10.0.0.1:9153', '[::2]:9153', 'localhost.evil:80', '127.0.0.1:9153:1']) t.notOk(hostHeaderIsLoopback(h), String(h))
})
