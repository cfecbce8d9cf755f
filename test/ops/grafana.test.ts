import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { DASHBOARD_FILE, metricNamesIn, readMetricConditions, readMetricNames, RULES_FILE, run, which } from './assets.js'

interface Target {
  expr?: string
  refId?: string
  datasource?: { type?: string; uid?: string }
}
interface Panel {
  id: number
  type: string
  title: string
  gridPos: { x: number; y: number; w: number; h: number }
  datasource?: { type?: string; uid?: string }
  targets?: Target[]
  panels?: Panel[]
}
interface Dashboard {
  uid: string
  title: string
  panels: Panel[]
  templating: { list: { name: string; type: string; query: unknown; datasource?: { uid?: string } }[] }
  annotations: { list: { expr?: string; datasource?: { uid?: string } }[] }
}

const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard
const listed = readMetricNames()
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])])
const dataPanels = panels.filter((p) => p.type !== 'row')
const exprs: { where: string; expr: string }[] = [
  ...dataPanels.flatMap((p) => (p.targets ?? []).map((x) => ({ where: `panel "${p.title}" ${x.refId}`, expr: x.expr ?? '' }))),
  ...dashboard.annotations.list.filter((a) => a.expr).map((a) => ({ where: 'annotation', expr: a.expr! })),
]

interface Rule {
  record?: string
  alert?: string
  expr: string
  annotations?: Record<string, string>
}
const rules = (parse(readFileSync(RULES_FILE, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules)

t.test('metric-names.txt reads as names, with conditions where a name needs a setting', async (t) => {
  const conditions = readMetricConditions()
  t.equal(conditions.get('egressd_dns_queries_total'), null)
  t.equal(conditions.get('egressd_firewall_errors_total'), 'firewall.nftables.enabled')
  t.equal(conditions.get('up'), 'prometheus')
  for (const name of conditions.keys()) t.match(name, /^(?:egressd_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+|up)$/, `${name} is a metric name`)
})

t.test('the name extractor', async (t) => {
  t.same([...metricNamesIn('histogram_quantile(0.99, sum by (le) (rate(egressd_dns_upstream_duration_seconds_bucket{instance=~"$instance"}[5m])))')], [
    'egressd_dns_upstream_duration_seconds',
  ])
  t.same([...metricNamesIn('sum(rate(egressd_sni_connections_total{verdict="egressd_not_a_name"}[1m])) / up{job="egressd"}')].sort(), [
    'egressd_sni_connections_total',
    'up',
  ])
  t.same([...metricNamesIn('rate(process_cpu_seconds_total[1m]) + nodejs_heap_size_used_bytes')].sort(), ['nodejs_heap_size_used_bytes', 'process_cpu_seconds_total'])
  t.same([...metricNamesIn('egressd:blocked_attempts:rate5m > 1 and on (job, instance) vector(1)')], [], 'recording rules and functions are not metric names')
  t.same([...metricNamesIn('sum by (job, instance) (egressd_blocked_total offset 15m)')], ['egressd_blocked_total'])
})

t.test('the dashboard is importable and takes its data source as a variable', async (t) => {
  t.equal(dashboard.uid, 'egressd')
  const ds = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS')
  t.ok(ds, 'a DS_PROMETHEUS variable')
  t.equal(ds?.type, 'datasource')
  t.equal(ds?.query, 'prometheus')
  const instance = dashboard.templating.list.find((v) => v.name === 'instance')
  t.equal(instance?.datasource?.uid, '${DS_PROMETHEUS}', 'the instance variable queries through it')
  t.match(JSON.stringify(instance?.query), /label_values\(up\{job=\\"egressd\\"\}, instance\)/)

  for (const p of dataPanels) {
    t.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `panel "${p.title}" uses the variable`)
    for (const x of p.targets ?? []) t.equal(x.datasource?.uid, '${DS_PROMETHEUS}', `panel "${p.title}" ${x.refId} uses the variable`)
    t.ok((p.targets ?? []).length > 0, `panel "${p.title}" has a query`)
  }
  // A data source uid from someone's Grafana would tie the file to that instance.
  const uids = new Set([...JSON.stringify(dashboard).matchAll(/"uid":\s*"([^"]*)"/g)].map((m) => m[1]))
  t.same([...uids].sort(), ['${DS_PROMETHEUS}', '-- Grafana --', 'egressd'].sort(), 'no other uid')
})

t.test('panels have unique ids and do not overlap on the 24-column grid', async (t) => {
  const ids = panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'unique ids')
  for (const p of panels) {
    t.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `"${p.title}" fits in 24 columns`)
  }
  const overlaps: string[] = []
  for (let i = 0; i < panels.length; i++) {
    for (let j = i + 1; j < panels.length; j++) {
      const a = panels[i]!.gridPos
      const b = panels[j]!.gridPos
      if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) overlaps.push(`${panels[i]!.title} / ${panels[j]!.title}`)
    }
  }
  t.same(overlaps, [], 'no overlapping panels')
})

t.test('every metric the dashboard reads is in metric-names.txt', async (t) => {
  t.ok(exprs.length >= 25, `${exprs.length} expressions found`)
  for (const { where, expr } of exprs) {
    const names = metricNamesIn(expr)
    t.ok(names.size > 0, `${where} reads a metric`)
    for (const name of names) t.ok(listed.has(name), `${where}: ${name} is listed`)
  }
})

t.test('every selector is filtered by the gateway variable', async (t) => {
  // Each metric selector must carry instance=~"$instance"; otherwise picking one gateway
  // would still mix in the others. `up` in the variable's own query is the exception.
  for (const { where, expr } of exprs) {
    for (const m of expr.matchAll(/\b((?:egressd|process|nodejs)_[a-z0-9_]+|up)\b(\{[^}]*\})?/g)) {
      t.match(m[2] ?? '', /instance=~"\$instance"/, `${where}: ${m[1]} selects $instance`)
    }
  }
})

t.test('the dashboard shows what operators asked for', async (t) => {
  const all = exprs.map((e) => e.expr).join('\n')
  const used = new Set(exprs.flatMap((e) => [...metricNamesIn(e.expr)]))
  for (const name of [
    'egressd_dns_queries_total',
    'egressd_sni_connections_total',
    'egressd_blocked_total',
    'egressd_dns_upstream_duration_seconds',
    'egressd_dns_cache_hits_total',
    'egressd_dns_cache_misses_total',
    'egressd_sni_active_connections',
    'egressd_sni_bytes_total',
    'egressd_config_reloads_total',
    'process_resident_memory_bytes',
  ]) {
    t.ok(used.has(name), `uses ${name}`)
  }
  t.match(all, /sum by \(verdict\) \(rate\(egressd_dns_queries_total/, 'DNS queries by verdict')
  t.match(all, /sum by \(verdict\) \(rate\(egressd_sni_connections_total/, 'SNI connections by verdict')
  t.match(all, /topk\(\d+, sum by \(protocol, name\) \(increase\(egressd_blocked_total/, 'top blocked names')
  t.match(all, /histogram_quantile\(0\.5, sum by \(le\) \(rate\(egressd_dns_upstream_duration_seconds_bucket/, 'upstream p50')
  t.match(all, /histogram_quantile\(0\.99, sum by \(le\) \(rate\(egressd_dns_upstream_duration_seconds_bucket/, 'upstream p99')
  t.match(all, /egressd_dns_cache_hits_total.*\/.*egressd_dns_cache_misses_total/, 'cache hit ratio')
})

t.test('the rules and the dashboard use only listed names, and every listed name is used', async (t) => {
  const usedByRules = new Set<string>()
  for (const r of rules) {
    const where = r.alert ?? r.record
    for (const name of metricNamesIn(r.expr)) {
      usedByRules.add(name)
      t.ok(listed.has(name), `rule ${where}: ${name} is listed`)
    }
    // Annotations point operators at metrics to look at next: those must exist too.
    for (const text of Object.values(r.annotations ?? {})) {
      for (const m of text.matchAll(/\begressd_[a-z0-9_]+/g)) t.ok(listed.has(m[0]), `rule ${where} annotation: ${m[0]} is listed`)
    }
  }
  const usedByDashboard = new Set(exprs.flatMap((e) => [...metricNamesIn(e.expr)]))
  // The list is what the assets use, not a wish list: the end-to-end scrape test holds
  // the daemon to every name in it.
  for (const name of listed) t.ok(usedByRules.has(name) || usedByDashboard.has(name), `${name} is used by the rules or the dashboard`)
})

const promtool = await which('promtool')
if (!promtool) console.log('# promtool not found (Debian package "prometheus"): PromQL syntax of the dashboard not checked')

t.test('every dashboard expression is valid PromQL (promtool)', { skip: promtool ? false : 'promtool missing (Debian package "prometheus")' }, async (t) => {
  if (!promtool) return
  // Grafana's variables replaced by what it would send, then each expression as a
  // recording rule: `promtool check rules` parses every one.
  const concrete = (e: string) => e.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '6h').replaceAll('$instance', '.*')
  const file = join(mkdtempSync(join(tmpdir(), 'egressd-grafana-')), 'dashboard.rules.yml')
  const doc = { groups: [{ name: 'dashboard', rules: exprs.map((e, i) => ({ record: `dashboard:expr_${i}`, expr: concrete(e.expr) })) }] }
  writeFileSync(file, JSON.stringify(doc))
  const r = await run(promtool, ['check', 'rules', file])
  t.equal(r.code, 0, `promtool check rules: ${r.stdout}${r.stderr}`)
  t.match(r.stdout, new RegExp(`SUCCESS: ${exprs.length} rules found`))
  // And the check really parses: a broken expression must fail it.
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'broken', rules: [{ record: 'x:y', expr: 'sum by (le (rate(egressd_x[1m]))' }] }] }))
  t.not((await run(promtool, ['check', 'rules', file])).code, 0, 'a broken expression fails')
})
