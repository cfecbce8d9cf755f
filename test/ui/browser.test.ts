/**
 * The status page in a real browser: Debian's chromium driven by playwright-core,
 * against the built daemon. Blocked queries come from real dig, blocked hellos from a
 * real TCP connection to the SNI listener; the page must show them without a reload.
 */
import t, { type Test } from 'tap'
import { existsSync, mkdtempSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { dig, fakeUpstream, hasTool } from '../dns/helpers.js'
import { freePort, startDaemon } from '../helpers/daemon.js'
import { buildClientHello } from '../helpers/client-hello-builder.js'
import { createHash } from 'node:crypto'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { compileConfig } from '../../src/daemon/compiled-config.js'
import { MetricsServer } from '../../src/metrics/server.js'
import { UI_DEFAULTS } from '../../src/ui/access.js'
import { StatusPage } from '../../src/ui/status-page.js'
import { hostPort, makeConfig } from '../dns/helpers.js'

const CHROMIUM = '/usr/bin/chromium'
const skip = !existsSync(CHROMIUM)
  ? `${CHROMIUM} missing (Debian package chromium; .ci/run installs it)`
  : !(await hasTool('dig'))
    ? 'dig not installed (Debian dnsutils)'
    : false

/** The flags that work on these machines: no sandbox as root, no calls home. */
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']

async function browser(t: Test): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), 'egressd-chromium-'))
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: FLAGS, headless: true, viewport: { width: 1280, height: 900 } })
  t.teardown(() => ctx.close())
  return ctx
}

/** A TLS hello to the SNI listener; resolves when egressd closes the connection. */
function hello(port: number, sni: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(buildClientHello({ sni })))
    s.on('data', () => {})
    s.on('error', () => resolve())
    s.on('close', () => resolve())
    s.setTimeout(5000, () => s.destroy())
  })
}

/**
 * The built daemon on loopback with the status page on its metrics listener, allowing
 * api.example.com, behind a fake upstream that answers every name with `addresses`
 * (A records; none: an empty answer); `extra` lines go at the end of the file.
 */
async function pageDaemon(t: Test, addresses: string[], extra: string[]) {
  const upstream = await fakeUpstream((q) => ({ answers: addresses.map((data) => ({ name: q.name, type: 'A', ttl: 300, data })) as never }))
  t.teardown(() => upstream.close())
  const [dnsPort, sniPort, metricsPort] = [await freePort(), await freePort(), await freePort()]
  const d = startDaemon([
    'dns:',
    `  listen: ["127.0.0.1:${dnsPort}"]`,
    `  upstreams: ["127.0.0.1:${upstream.port}"]`,
    'sni:',
    `  listen: ["127.0.0.1:${sniPort}"]`,
    'metrics:',
    `  listen: "127.0.0.1:${metricsPort}"`,
    'allow: ["api.example.com"]',
    ...extra,
    '',
  ].join('\n'))
  t.teardown(() => d.stop())
  await d.waitForLog('ready')
  return { upstream, d, dnsPort, sniPort, metricsPort }
}

const rows = (page: Page) => page.locator('#events tbody tr.event')
const nameCells = (page: Page) => page.locator('#events tbody td.name').allTextContents()

t.test('the status page shows blocked attempts live, filters them and proposes an allowlist', { skip }, async (t) => {
  const { upstream, dnsPort, sniPort, metricsPort } = await pageDaemon(t, ['198.51.100.7'], ['groups:', '  - name: cams', '    clients: [127.0.0.2/32]'])

  const { page, dialogs, pageErrors } = await watchedPage(t)
  await page.goto(`http://127.0.0.1:${metricsPort}/`)
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 })
  t.equal(await rows(page).count(), 0, 'nothing blocked yet')
  t.match(await page.locator('#state-list').textContent(), /api\.example\.com|1/, 'state is shown')
  t.match(await page.locator('#summary').textContent(), /1 rules · mode enforce/)

  // Blocked DNS from the default group (127.0.0.1) and the cams group (127.0.0.2).
  const telemetry = ['a', 'b', 'c', 'd', 'e'].map((l) => `${l}.telemetry.vendor-x.com`)
  for (const name of telemetry) t.equal((await dig('dig', dnsPort, [name])).status, 'NXDOMAIN')
  t.equal((await dig('dig', dnsPort, ['-b', '127.0.0.2', 'cloud.cam-vendor.net'])).status, 'NXDOMAIN')
  t.equal((await dig('dig', dnsPort, ['api.example.com'])).status, 'NOERROR', 'an allowed name')
  await hello(sniPort, 'tracker.example.org')

  await page.locator('#events td.name', { hasText: 'tracker.example.org' }).waitFor({ timeout: 10_000 })
  await page.locator('#events td.name', { hasText: 'cloud.cam-vendor.net' }).waitFor({ timeout: 10_000 })
  t.equal(await rows(page).count(), 7, 'five + one DNS blocks and one TLS block appeared without a reload; the allowed query is not listed')
  t.same((await nameCells(page))[0], 'tracker.example.org', 'newest first')

  // Filters.
  await page.selectOption('#f-proto', 'sni')
  t.same(await nameCells(page), ['tracker.example.org'], 'protocol filter: TLS only')
  await page.selectOption('#f-proto', 'dns')
  t.equal(await rows(page).count(), 6, 'protocol filter: DNS only')
  await page.selectOption('#f-group', 'cams')
  t.same(await nameCells(page), ['cloud.cam-vendor.net'], 'group filter')
  await page.selectOption('#f-group', '')
  await page.selectOption('#f-proto', '')
  await page.selectOption('#f-device', '127.0.0.2')
  t.same(await nameCells(page), ['cloud.cam-vendor.net'], 'device filter')
  await page.selectOption('#f-device', '127.0.0.1')
  t.equal(await rows(page).count(), 6, 'the other device')
  await page.selectOption('#f-device', '')

  // Tops over the ring.
  t.match(await page.locator('#top-devices li').first().textContent(), /127\.0\.0\.1\s*×6/)

  // The proposal follows new events by itself (every 3 s at most).
  const proposal = page.locator('#proposal')
  await proposal.filter({ hasText: 'tracker.example.org' }).waitFor({ timeout: 10_000 })
  const yaml = (await proposal.textContent()) ?? ''
  t.match(yaml, /allow:\n {2}- "\*\.telemetry\.vendor-x\.com" {2}# 5 names/, 'five siblings collapse into a wildcard, as suggest does')
  t.match(yaml, /- "tracker\.example\.org"/)
  t.match(yaml, /- name: cams\n.*\n {4}allow:\n {6}- "cloud\.cam-vendor\.net"/, 'the cams group has its own list')
  t.notMatch(yaml, /api\.example\.com/, 'an allowed name is not proposed')

  // One row per upstream (the metrics' upstream label), from the 5 s samples.
  await page.locator('#upstreams td', { hasText: `127.0.0.1:${upstream.port}` }).waitFor({ timeout: 15_000 })
  t.match(await page.locator('#upstreams tbody tr').first().textContent(), /udp/, 'the upstream row names its transport')

  // Screenshots of both colour schemes and a phone, for a person to look at.
  t.saveFixture = true
  const out = t.testdir({})
  await page.emulateMedia({ colorScheme: 'light' })
  await page.screenshot({ path: join(out, 'light.png'), fullPage: true })
  const bgLight = await page.evaluate<string>('getComputedStyle(document.body).backgroundColor')
  await page.emulateMedia({ colorScheme: 'dark' })
  await page.screenshot({ path: join(out, 'dark.png'), fullPage: true })
  const bgDark = await page.evaluate<string>('getComputedStyle(document.body).backgroundColor')
  t.not(bgLight, bgDark, `the dark scheme changes the page (${bgLight} vs ${bgDark})`)
  await page.setViewportSize({ width: 390, height: 844 })
  await page.screenshot({ path: join(out, 'phone-dark.png'), fullPage: true })
  const phoneWidth = await page.evaluate<number>('document.documentElement.scrollWidth')
  t.ok(phoneWidth <= 390, `no sideways scrolling on a phone (page ${phoneWidth} px wide)`)
  t.comment(`screenshots in ${out}`)

  t.same(dialogs, [])
  t.same(pageErrors, [], 'no script errors on the page')
})

t.test('names and SNI crafted as markup are shown as text and never run', { skip }, async (t) => {
  const { dnsPort, sniPort, metricsPort } = await pageDaemon(t, [], [])
  const { page, dialogs } = await watchedPage(t)
  await page.goto(`http://127.0.0.1:${metricsPort}/`)
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 })

  // DNS labels carry these bytes as they are (\032 is a space in dig's syntax); the
  // daemon logs them unchanged. The hello's name fails the SNI name check (bad_name)
  // and is logged with only non-printable bytes escaped.
  const dnsNames = ['<img\\032src=x\\032onerror=__pwned=1;alert(1)>.inject.example', '<script>__pwned=2</script>.inject.example', '<svg/onload=__pwned=3>.inject.example']
  for (const n of dnsNames) t.equal((await dig('dig', dnsPort, [n])).status, 'NXDOMAIN', `dig ${n}`)
  await hello(sniPort, '<img/src=x/onerror=__pwned=4>')
  await rows(page).nth(3).waitFor({ timeout: 10_000 })

  // The daemon escapes every byte outside the label alphabet (\DDD, one rule for DNS and
  // SNI) before a name reaches a log line, a metric or this page; the page shows that text.
  const esc = (name: string): string => name.split('.').map((l) => [...l].map((c) => (/[a-z0-9_-]/.test(c) ? c : `\\${String(c.charCodeAt(0)).padStart(3, '0')}`)).join('')).join('.')
  const names = await nameCells(page)
  t.ok(names.includes(esc('<img src=x onerror=__pwned=1;alert(1)>') + '.inject.example'), 'the DNS name is shown as escaped text')
  t.ok(names.includes(esc('<script>__pwned=2</script>') + '.inject.example'))
  t.ok(names.some((n) => n.includes('img') && n.includes('\\060')), 'the SNI is shown as escaped text')
  const elements = await page.evaluate<number>("document.querySelectorAll('#events img, #events script, #events svg, #top-names img, #top-names svg, #top-names script, #proposal *').length")
  t.equal(elements, 0, 'no element was made from a name')
  // Give any handler that slipped through a moment to run.
  await page.waitForTimeout(500)
  t.equal(await page.evaluate<unknown>('window.__pwned'), undefined, 'no injected script ran')
  t.same(dialogs, [], 'no dialog opened')
  const yaml = (await page.locator('#proposal').textContent()) ?? ''
  t.notMatch(yaml, /pwned/, 'names that are not host names are never proposed')
})

/** A fresh page that records every dialog (dismissed) and every script error it meets. */
async function watchedPage(t: Test): Promise<{ page: Page; dialogs: string[]; pageErrors: string[] }> {
  const page = await (await browser(t)).newPage()
  const dialogs: string[] = []
  page.on('dialog', (dlg) => {
    dialogs.push(dlg.message())
    void dlg.dismiss()
  })
  const pageErrors: string[] = []
  page.on('pageerror', (e) => pageErrors.push(e.message))
  return { page, dialogs, pageErrors }
}

/**
 * The page and API in-process on a loopback socket; `shownAddress` is the metrics address
 * the configuration names (it decides the access rule; no traffic goes there).
 */
async function inProcessPage(t: Test, config: Parameters<typeof compileConfig>[0], shownAddress: string): Promise<{ status: StatusPage; http: MetricsServer }> {
  const registry = new Registry()
  const status = new StatusPage(compileConfig(config), { registry, log: pino({ level: 'silent' }), sources: { listeners: () => ({ dns: [], sni: [], metrics: shownAddress }), firewall: () => null } })
  const http = new MetricsServer(registry, hostPort('127.0.0.1:0'), status.routes())
  await http.start()
  await status.start()
  t.teardown(async () => {
    await status.stop()
    await http.stop()
  })
  return { status, http }
}

t.test('raw markup that reaches the ring (names, reasons, groups, clients) is shown as text, never run', { skip: existsSync(CHROMIUM) ? false : skip }, async (t) => {
  // The daemon escapes names before they reach the ring; this feeds the ring directly, so
  // the page's own escaping (textContent, never innerHTML) is what is tested.
  const config = { ...makeConfig(), metrics: { listen: hostPort('127.0.0.1:9153'), blockedNamesMax: 10, blockedClientsMax: 10 }, ui: { ...UI_DEFAULTS } }
  const { status, http } = await inProcessPage(t, config, '127.0.0.1:9153')
  const bad = ['<img src=x onerror=__pwned=11>', '<script>__pwned=12</script>', '<svg/onload=__pwned=13>']
  for (const [i, markup] of bad.entries()) {
    status.tap({ protocol: i % 2 ? 'sni' : 'dns', client: markup, name: `${markup}.raw.example`, type: 'A', verdict: 'blocked', rule: null, reason: markup, group: markup, mode: 'enforce' })
  }
  const ctx = await browser(t)
  const page = await ctx.newPage()
  await page.goto(`http://127.0.0.1:${http.address!.port}/`)
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 })
  await rows(page).nth(2).waitFor({ timeout: 10_000 })
  const names = await nameCells(page)
  for (const markup of bad) t.ok(names.includes(`${markup}.raw.example`), `shown literally: ${markup}`)
  const elements = await page.evaluate<number>("document.querySelectorAll('#events img, #events script, #events svg, #top-names img, #top-names svg, #top-names script, #top-clients img, #top-clients svg, #top-clients script, #proposal *, select img, select script').length")
  t.equal(elements, 0, 'no element was made from the markup')
  await page.waitForTimeout(500)
  t.equal(await page.evaluate('typeof (globalThis as any).__pwned'.replace(' as any', '')), 'undefined', 'no injected script ran')
})

t.test('on a non-loopback listener the page asks for the token, refuses a wrong one, and works with the right one', { skip: existsSync(CHROMIUM) ? false : skip }, async (t) => {
  // The page and API in-process: the configuration names a management address (so the
  // token applies), the socket is bound on loopback (so no traffic leaves the host).
  const token = 'k'.repeat(24)
  const config = { ...makeConfig(), metrics: { listen: hostPort('192.0.2.10:9153'), blockedNamesMax: 10, blockedClientsMax: 10 }, ui: { ...UI_DEFAULTS, tokenFile: 'ui.token', tokenSha256: createHash('sha256').update(token).digest('hex') } }
  const { status, http } = await inProcessPage(t, config, '192.0.2.10:9153')
  status.tap({ protocol: 'dns', client: '10.9.9.9', name: 'before.example', type: 'A', verdict: 'blocked', rule: null, reason: 'not_allowed', group: 'default', mode: 'enforce' })
  const base = `http://127.0.0.1:${http.address!.port}/`
  const ctx = await browser(t)
  const page = await ctx.newPage()
  await page.goto(base)
  await page.locator('#token-form').waitFor({ timeout: 10_000 })
  t.equal(await page.locator('#main').isHidden(), true, 'no data before the token')
  await page.fill('#token', 'wrong-token-wrong-token')
  await page.click('#token-form button')
  await page.locator('#token-error', { hasText: 'not accepted' }).waitFor({ timeout: 10_000 })
  await page.fill('#token', token)
  await page.click('#token-form button')
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 })
  t.same(await nameCells(page), ['before.example'], 'the ring is shown once the token is accepted')
  status.tap({ protocol: 'sni', client: '10.9.9.9', name: 'after.example', verdict: 'blocked', rule: null, reason: 'not_allowed', group: 'default', mode: 'enforce' })
  await page.locator('#events td.name', { hasText: 'after.example' }).waitFor({ timeout: 10_000 })
  t.pass('the live stream carries the token too')

  // A link with #token=… opens the page directly and drops the token from the address bar.
  const second = await ctx.newPage()
  await second.goto(`${base}#token=${token}`)
  await second.locator('#live', { hasText: 'live' }).waitFor({ timeout: 10_000 })
  t.equal(new URL(second.url()).hash, '', 'the fragment is removed')
  t.equal(await second.locator('#events tbody tr.event').count(), 2)
})
