/**
 * The ruleset scope check against the real kernel, inside a network namespace this
 * test creates: config/nftables/egressd.nft loaded with a mismatching EGRESSD_SCOPE,
 * then the matching one and a reload. Skipped, with the reason printed, where that is
 * impossible: not root, no `ip` or `nft`, or namespaces refused.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Registry } from 'prom-client'
import { NftablesSink, SpawnNftRunner } from '../../src/firewall/nftables-sink.js'
import { captureLogger, execFileP, probeNetns } from './helpers.js'

const TEMPLATE = readFileSync(fileURLToPath(new URL('../../config/nftables/egressd.nft', import.meta.url)), 'utf8')

const probe = await probeNetns()
if (!probe.ok) {
  t.comment(`skipping real-nft ruleset scope tests: ${probe.reason}`)
  t.pass(`skipped: ${probe.reason}`, { skip: probe.reason })
} else {
  const ns = `egressd-scope-${process.pid}`
  const dir = mkdtempSync(join(tmpdir(), 'egressd-scope-'))
  await execFileP('ip', ['netns', 'add', ns])
  t.teardown(async () => {
    await execFileP('ip', ['netns', 'del', ns]).catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  })
  const nft = (...args: string[]) => execFileP('ip', ['netns', 'exec', ns, 'nft', ...args])
  /** Loads the shipped template with EGRESSD_SCOPE set to `chain`, as an operator would. */
  const loadTemplate = async (chain: string) => {
    const file = join(dir, `${chain}.nft`)
    const text = TEMPLATE.replace(/^define EGRESSD_SCOPE = .*$/m, `define EGRESSD_SCOPE = "${chain}"`)
    if (!text.includes(`define EGRESSD_SCOPE = "${chain}"`)) throw new Error('the template has no EGRESSD_SCOPE define')
    writeFileSync(file, text)
    await nft('-f', file)
  }
  const cfg = (scope: 'shared' | 'device', deviceKey: 'address' | 'mac' = 'address') => ({ enabled: true, table: 'egressd', graceSeconds: 60, scope, deviceKey, maxElementsPerDevice: 1024, maxElements: 65_536 })
  function sink(scope: 'shared' | 'device', deviceKey: 'address' | 'mac' = 'address') {
    const registry = new Registry()
    const { log, lines } = captureLogger()
    const s = new NftablesSink(cfg(scope, deviceKey), { log, registry, runner: new SpawnNftRunner({ command: ['ip', 'netns', 'exec', ns, 'nft'] }) })
    const gauge = async () => (await registry.getSingleMetric('egressd_firewall_ruleset_scope_match')!.get()).values[0]?.value
    return { s, lines, gauge }
  }

  t.test('no ruleset at all: unknown (-1), no error', async (t) => {
    const { s, lines, gauge } = sink('shared')
    await s.start()
    t.equal(await gauge(), -1)
    t.match(lines.find((l) => l.msg === 'nftables sets ready'), { ruleset: 'unknown' })
    t.notOk(lines.some((l) => (l.level as number) >= 40), 'no warning or error')
    await s.stop()
    await nft('delete', 'table', 'inet', 'egressd')
  })

  t.test('template with "device_scope", egressd in scope shared: error with the define, gauge 0; fixed define and a reload: gauge 1', async (t) => {
    await loadTemplate('device_scope')
    const { s, lines, gauge } = sink('shared')
    await t.resolves(s.start(), 'the start does not fail')
    t.equal(await gauge(), 0)
    const errors = lines.filter((l) => l.level === 50)
    t.equal(errors.length, 1)
    t.match(errors[0], { table: 'egressd', jumpsTo: ['device_scope'], expected: 'shared_scope', fix: 'define EGRESSD_SCOPE = "shared_scope"' })
    t.match(lines.find((l) => l.msg === 'nftables sets ready'), { ruleset: 'mismatch' })

    await loadTemplate('shared_scope')
    s.update(cfg('shared'))
    t.equal(await s.checkRuleset(), 'match')
    t.equal(await gauge(), 1, 'after the reload')
    t.equal(lines.filter((l) => l.level === 50).length, 1, 'no further error')
    await s.stop()
  })

  t.test('device_key mac with the address-keyed define: mismatch; with "device_mac_scope": match', async (t) => {
    await loadTemplate('device_scope')
    const { s, lines, gauge } = sink('device', 'mac')
    await s.start()
    t.equal(await gauge(), 0)
    t.match(lines.find((l) => l.level === 50), { fix: 'define EGRESSD_SCOPE = "device_mac_scope"' })
    await loadTemplate('device_mac_scope')
    s.update(cfg('device', 'mac'))
    t.equal(await s.checkRuleset(), 'match')
    t.equal(await gauge(), 1)
    await s.stop()
  })

  t.test("an operator's own forward chain in the table, naming no scope chain: unknown, no error", async (t) => {
    await nft('delete', 'table', 'inet', 'egressd')
    await nft('add', 'table', 'inet', 'egressd')
    await nft('add', 'chain', 'inet', 'egressd', 'forward', '{ type filter hook forward priority filter; policy accept; }')
    await nft('add', 'rule', 'inet', 'egressd', 'forward', 'ct', 'state', 'established', 'accept')
    const { s, lines, gauge } = sink('shared')
    await s.start()
    t.equal(await gauge(), -1)
    t.notOk(lines.some((l) => l.level === 50))
    await s.stop()
  })
}
