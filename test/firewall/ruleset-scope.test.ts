/**
 * The check that the ruleset reads the sets the sink fills: the pure reader on real
 * `nft -j` output (test/firewall/fixtures/forward-*.json, captured from nft 1.0.6 in a
 * namespace: the shipped template under each EGRESSD_SCOPE, an operator's chain with a
 * verdict map, and one with no scope chain), then the sink's log and gauge around it.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { Registry } from 'prom-client'
import { NftablesSink } from '../../src/firewall/nftables-sink.js'
import type { NftRunner } from '../../src/firewall/nft-runner.js'
import { NftError } from '../../src/firewall/nft-runner.js'
import { forwardChainArgs, forwardScopeChains, judgeRulesetScope } from '../../src/firewall/ruleset-scope.js'
import { captureLogger, tick } from './helpers.js'

const fixture = (name: string) => readFileSync(new URL(`./fixtures/forward-${name}.json`, import.meta.url), 'utf8')

t.test('forwardScopeChains reads the scope chain of real listings', async (t) => {
  t.same(forwardScopeChains(fixture('shared_scope')), ['shared_scope'])
  t.same(forwardScopeChains(fixture('device_scope')), ['device_scope'])
  t.same(forwardScopeChains(fixture('device_mac_scope')), ['device_mac_scope'])
  t.same(forwardScopeChains(fixture('vmap')), ['device_scope', 'shared_scope'], 'goto and jump inside a verdict map')
  t.same(forwardScopeChains(fixture('own')), [], 'a forward chain naming no scope chain')
  t.equal(forwardScopeChains('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}'), null, 'no forward chain')
  t.equal(forwardScopeChains(''), null, 'nft printed nothing')
  t.equal(forwardScopeChains('{"nftables": 3}'), null)
  t.equal(forwardScopeChains('[1,2'), null, 'not JSON')
  // Rules of another chain (a `list table` listing) are not read.
  const table = JSON.stringify({ nftables: [
    { chain: { family: 'inet', table: 'egressd', name: 'forward' } },
    { rule: { family: 'inet', table: 'egressd', chain: 'input', expr: [{ jump: { target: 'device_scope' } }] } },
    { rule: { family: 'inet', table: 'egressd', chain: 'forward', expr: [{ jump: { target: 'somewhere_else' } }, { goto: { target: 'shared_scope' } }] } },
    { rule: { family: 'inet', table: 'egressd', chain: 'forward', expr: [{ jump: { target: 'shared_scope' } }, null, 7] } },
  ] })
  t.same(forwardScopeChains(table), ['shared_scope'], 'only the forward chain; each chain once')
  // A hostile nesting depth is not walked to the end (and does not blow the stack).
  const deep = '['.repeat(5000) + '{"jump": {"target": "device_scope"}}' + ']'.repeat(5000)
  t.same(forwardScopeChains(`{"nftables": [{"chain": {"table": "x", "name": "forward"}}, {"rule": {"table": "x", "chain": "forward", "expr": ${deep}}}]}`), [])
  const shallow = '['.repeat(20) + '{"jump": {"target": "device_scope"}}' + ']'.repeat(20)
  t.same(forwardScopeChains(`{"nftables": [{"chain": {"table": "x", "name": "forward"}}, {"rule": {"table": "x", "chain": "forward", "expr": ${shallow}}}]}`), ['device_scope'], 'nesting within the bound is read')
  t.same(forwardChainArgs('egressd'), ['-j', 'list', 'chain', 'inet', 'egressd', 'forward'])
})

t.test('judgeRulesetScope: match, mismatch, unknown', async (t) => {
  t.same(judgeRulesetScope(['shared_scope'], 'shared'), { verdict: 'match', others: [] })
  t.same(judgeRulesetScope(['device_scope'], 'shared'), { verdict: 'mismatch', others: ['device_scope'] })
  t.same(judgeRulesetScope(['device_scope'], 'mac'), { verdict: 'mismatch', others: ['device_scope'] }, 'address-keyed chain for a MAC-keyed sink')
  t.same(judgeRulesetScope(['device_mac_scope'], 'mac'), { verdict: 'match', others: [] })
  t.same(judgeRulesetScope(['device_scope', 'shared_scope'], 'device'), { verdict: 'mismatch', others: ['shared_scope'] }, 'a second scope chain reads empty sets too')
  t.same(judgeRulesetScope([], 'device'), { verdict: 'unknown', others: [] })
  t.same(judgeRulesetScope(null, 'device'), { verdict: 'unknown', others: [] })
})

/** Answers `list chain` with whatever the test sets; `nft -f` runs succeed. */
class ListingRunner implements NftRunner {
  listing: string | Error = fixture('shared_scope')
  queries: string[][] = []
  async run(): Promise<void> {}
  async query(args: readonly string[]): Promise<string> {
    if (args.includes('chain')) {
      this.queries.push([...args])
      if (this.listing instanceof Error) throw this.listing
      return this.listing
    }
    return '{"nftables": []}'
  }
}

function setup(scope: 'shared' | 'device' = 'shared', deviceKey: 'address' | 'mac' = 'address', rulesetCheckMs?: number) {
  const runner = new ListingRunner()
  const registry = new Registry()
  const { log, lines } = captureLogger()
  const sink = new NftablesSink({ enabled: true, table: 'egressd', graceSeconds: 60, scope, deviceKey, maxElementsPerDevice: 1024, maxElements: 65_536 }, { log, registry, runner, rulesetCheckMs })
  const gauge = async () => (await registry.getSingleMetric('egressd_firewall_ruleset_scope_match')!.get()).values[0]?.value
  const errors = () => lines.filter((l) => l.level === 50)
  return { runner, sink, lines, gauge, errors }
}

t.test('start: a matching ruleset sets 1 and logs no error', async (t) => {
  const { sink, lines, gauge, errors, runner } = setup()
  t.equal(await gauge(), -1, 'unknown before the first check')
  await sink.start()
  t.equal(await gauge(), 1)
  t.same(errors(), [])
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { ruleset: 'match' })
  t.same(runner.queries, [['-j', 'list', 'chain', 'inet', 'egressd', 'forward']])
})

t.test('start with a mismatching define: one error naming the define to set, gauge 0, start still succeeds; a reload re-checks, logs the same mismatch only once, and sees the fix', async (t) => {
  const { sink, runner, gauge, errors, lines } = setup('device', 'mac')
  runner.listing = fixture('device_scope')
  await t.resolves(sink.start())
  t.equal(await gauge(), 0)
  t.equal(errors().length, 1)
  t.match(errors()[0], { expected: 'device_mac_scope', jumpsTo: ['device_scope'], fix: 'define EGRESSD_SCOPE = "device_mac_scope"' })
  t.match(String(errors()[0]!.msg), /jumps to device_scope.*EGRESSD_SCOPE = "device_mac_scope".*scope: device, device_key: address/)
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { ruleset: 'mismatch' })

  const cfg = { enabled: true, table: 'egressd', graceSeconds: 60, scope: 'device' as const, deviceKey: 'mac' as const, maxElementsPerDevice: 1024, maxElements: 65_536 }
  sink.update(cfg)
  t.equal(await sink.checkRuleset(), 'mismatch')
  t.equal(errors().length, 1, 'the same mismatch is not logged again on reload')

  runner.listing = fixture('shared_scope')
  t.equal(await sink.checkRuleset(), 'mismatch', 'another wrong chain')
  t.equal(errors().length, 2, 'a different mismatch is logged')
  t.match(errors()[1], { jumpsTo: ['shared_scope'] })

  runner.listing = fixture('device_mac_scope')
  sink.update(cfg)
  await tick()
  t.equal(await sink.checkRuleset(), 'match')
  t.equal(await gauge(), 1, 'fixed after the reload')
  runner.listing = fixture('shared_scope')
  t.equal(await sink.checkRuleset(), 'mismatch')
  t.equal(errors().length, 3, 'broken again after a fix: logged again')
  await sink.stop()
})

t.test('between reloads the check runs on its interval: a ruleset fixed after start clears the gauge without a reload; stop ends it', async (t) => {
  const { sink, runner, gauge, errors, lines } = setup('device', 'address', 50)
  runner.listing = fixture('shared_scope')
  await sink.start()
  t.equal(await gauge(), 0, 'mismatch at start')
  t.equal(errors().length, 1)
  runner.listing = fixture('device_scope')
  const deadline = Date.now() + 5000
  while ((await gauge()) !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.equal(await gauge(), 1, 'the operator loaded the right define; no reload was needed')
  t.ok(lines.some((l) => l.level === 30 && /now reads the sets egressd fills/.test(String(l.msg))), 'the fix is logged')
  t.equal(errors().length, 1, 'no second error')
  await sink.stop()
  const after = runner.queries.length
  await new Promise((r) => setTimeout(r, 200))
  t.equal(runner.queries.length, after, 'no check after stop')
})

t.test('no forward chain, no scope chain in it, or nft failing: unknown (-1), never an error', async (t) => {
  const { sink, runner, gauge, errors, lines } = setup()
  runner.listing = new NftError('nft exited with 1: Error: No such file or directory | list chain inet egressd forward')
  await sink.start()
  t.equal(await gauge(), -1)
  t.match(lines.find((l) => l.msg === 'nftables sets ready'), { ruleset: 'unknown' })
  t.notOk(lines.some((l) => /forward chain/.test(String(l.msg))), 'an absent chain is not worth a line')

  runner.listing = fixture('own')
  t.equal(await sink.checkRuleset(), 'unknown')
  runner.listing = new NftError('nft exited with 1: Error: Operation not permitted')
  t.equal(await sink.checkRuleset(), 'unknown')
  t.equal(lines.filter((l) => l.level === 40 && /could not read the forward chain/.test(String(l.msg))).length, 1, 'another failure is a warning')
  t.equal(await gauge(), -1)
  t.same(errors(), [])
})

t.test('checks asked for while one runs share one further run', async (t) => {
  const { sink, runner } = setup()
  const a = sink.checkRuleset()
  const b = sink.checkRuleset()
  const c = sink.checkRuleset()
  t.same(await Promise.all([a, b, c]), ['match', 'match', 'match'])
  t.equal(runner.queries.length, 2, 'the running check, then one more')
})
