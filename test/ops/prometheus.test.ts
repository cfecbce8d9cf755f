import t from 'tap'
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse, stringify } from 'yaml'
import { PROMETHEUS_DIR, RULES_FILE, RULES_TEST_FILE, run, which } from './assets.js'

interface Rule {
  record?: string
  alert?: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}
interface RulesDoc {
  groups: { name: string; rules: Rule[] }[]
}
interface AlertCase {
  eval_time: string
  alertname: string
  exp_alerts: unknown[]
}
interface TestsDoc {
  rule_files: string[]
  tests: { name: string; alert_rule_test?: AlertCase[]; promql_expr_test?: { expr: string }[] }[]
}

const rulesDoc = parse(readFileSync(RULES_FILE, 'utf8')) as RulesDoc
const rules = rulesDoc.groups.flatMap((g) => g.rules)
const alerts = rules.filter((r) => r.alert)
const testsDoc = parse(readFileSync(RULES_TEST_FILE, 'utf8')) as TestsDoc

t.test('the rules are the ones the operators asked for, each with severity and summary', async (t) => {
  const names = alerts.map((a) => a.alert)
  for (const required of [
    'EgressdDown',
    'EgressdAbsent',
    'EgressdDeviceBlockedName',
    'EgressdBlockedSpike',
    'EgressdUpstreamDnsErrors',
    'EgressdUpstreamDnsNoAnswers',
    'EgressdSniUpstreamErrors',
    'EgressdConfigReloadFailed',
  ]) {
    t.ok(names.includes(required), `alert ${required}`)
  }
  t.equal(new Set(names).size, names.length, 'alert names are unique')
  for (const a of alerts) {
    t.match(a.labels?.severity ?? '', /^(?:info|warning|critical)$/, `${a.alert} has a severity`)
    t.ok(a.annotations?.summary, `${a.alert} has a summary`)
    t.ok(a.annotations?.description, `${a.alert} has a description`)
  }
  t.match(alerts.find((a) => a.alert === 'EgressdDown')?.expr ?? '', /^up\{job="egressd"\} == 0$/)
  t.equal(alerts.find((a) => a.alert === 'EgressdDown')?.for, '1m')
  t.match(alerts.find((a) => a.alert === 'EgressdAbsent')?.expr ?? '', /^absent\(up\{job="egressd"\}\)$/)
  t.equal(alerts.find((a) => a.alert === 'EgressdDeviceBlockedName')?.labels?.severity, 'info')
})

t.test('every alert has a unit test that fires it and one that expects silence', async (t) => {
  t.same(testsDoc.rule_files, ['egressd.rules.yml'])
  const cases = testsDoc.tests.flatMap((x) => x.alert_rule_test ?? [])
  for (const a of alerts) {
    const mine = cases.filter((c) => c.alertname === a.alert)
    t.ok(
      mine.some((c) => c.exp_alerts.length > 0),
      `${a.alert} fires in some case`,
    )
    t.ok(
      mine.some((c) => c.exp_alerts.length === 0),
      `${a.alert} stays silent in some case`,
    )
  }
  const known = new Set(alerts.map((a) => a.alert))
  for (const c of cases) t.ok(known.has(c.alertname), `test case names an existing alert (${c.alertname})`)
  for (const r of rules.filter((r) => r.record)) {
    t.ok(
      testsDoc.tests.some((x) => (x.promql_expr_test ?? []).some((e) => e.expr.includes(r.record!))),
      `recording rule ${r.record} has an expression test`,
    )
  }
})

const promtool = await which('promtool')
if (!promtool) console.log('# promtool not found: install the Debian package "prometheus" (it ships promtool) to check and unit-test the rules')

t.test('promtool', { skip: promtool ? false : 'promtool missing (Debian package "prometheus")' }, async (t) => {
  if (!promtool) return
  t.comment((await run(promtool, ['--version'])).stdout.split('\n')[0] ?? '')

  t.test('check rules', async (t) => {
    const r = await run(promtool, ['check', 'rules', RULES_FILE])
    t.equal(r.code, 0, r.stdout + r.stderr)
    t.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`))
  })

  t.test('test rules', async (t) => {
    const r = await run(promtool, ['test', 'rules', RULES_TEST_FILE], { cwd: PROMETHEUS_DIR })
    t.equal(r.code, 0, r.stdout + r.stderr)
    t.match(r.stdout, /SUCCESS/)
  })

  t.test('the unit tests catch a rule that misses a first blocked attempt', async (t) => {
    // increase() cannot see the sample a series is born with; egressd_blocked_total and
    // egressd_config_reloads_total{result="failure"} are born at 1. Without the
    // "new series" term the suite must fail, or it is not testing that case.
    const dir = mkdtempSync(join(tmpdir(), 'egressd-rules-'))
    const mutated = structuredClone(rulesDoc)
    for (const g of mutated.groups) {
      for (const r of g.rules) {
        if (r.alert === 'EgressdDeviceBlockedName' || r.alert === 'EgressdConfigReloadFailed') {
          r.expr = r.expr.split('\nor\n')[0]!
          t.match(r.expr, /^sum by .*increase\(/, `${r.alert} cut down to its increase() term`)
        }
      }
    }
    writeFileSync(join(dir, 'egressd.rules.yml'), stringify(mutated))
    copyFileSync(RULES_TEST_FILE, join(dir, 'rules.test.yml'))
    const r = await run(promtool, ['test', 'rules', 'rules.test.yml'], { cwd: dir })
    t.not(r.code, 0, 'the suite fails')
    t.match(r.stdout + r.stderr, /alertname: EgressdDeviceBlockedName/)
    t.match(r.stdout + r.stderr, /alertname: EgressdConfigReloadFailed/)
  })

  t.test('the scrape config example is valid and loads the rules', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'egressd-prom-'))
    copyFileSync(join(PROMETHEUS_DIR, 'prometheus.yml.example'), join(dir, 'prometheus.yml'))
    copyFileSync(RULES_FILE, join(dir, 'egressd.rules.yml'))
    const r = await run(promtool, ['check', 'config', 'prometheus.yml'], { cwd: dir })
    t.equal(r.code, 0, r.stdout + r.stderr)
    t.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`), 'the rule file is found and parsed')
    const cfg = parse(readFileSync(join(dir, 'prometheus.yml'), 'utf8')) as {
      scrape_configs: { job_name: string; scrape_interval: string; static_configs: { targets: string[] }[] }[]
    }
    const job = cfg.scrape_configs.find((s) => s.job_name === 'egressd')
    t.ok(job, 'job egressd (the rules select job="egressd")')
    t.equal(job?.scrape_interval, '15s')
    t.ok(job?.static_configs.some((s) => s.targets.includes('127.0.0.1:9153')), 'scrapes the default metrics.listen')
  })
})
