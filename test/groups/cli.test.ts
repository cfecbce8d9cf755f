import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI } from '../helpers/daemon.js'

const dir = mkdtempSync(join(tmpdir(), 'egressd-groups-cli-'))
function egressd(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr })
    })
  })
}
const file = join(dir, 'g.yaml')
writeFileSync(file, [
  'allow: ["api.example.com"]',
  'groups:',
  '  - name: sensors',
  '    clients: [192.168.10.0/24]',
  '    allow: ["*.vendor.example"]',
  '    report: [{name: "*.trial.example", ports: [8883/tcp]}]',
  '  - name: onboarding',
  '    clients: ["fd00::/64"]',
  '    mode: report',
  '',
].join('\n'))

t.test('check --client: the group, why, and the verdict in that group', async (t) => {
  const r = await egressd('check', '-c', file, '--client', '192.168.10.7', 'a.vendor.example', 'x.trial.example', 'api.example.com', 'vendor.example')
  t.equal(r.code, 1, 'a would_block or block fails the check')
  const lines = r.stdout.trim().split('\n')
  t.match(lines[0], new RegExp(`^group\\tsensors\\tclient 192\\.168\\.10\\.7 is in 192\\.168\\.10\\.0/24 \\(group at .*g\\.yaml:3:5\\)$`))
  t.match(lines[1], /^allow\ta\.vendor\.example\tallow \*\.vendor\.example at .*g\.yaml:5:13 ports 443\/tcp$/)
  t.match(lines[2], /^would_block\tx\.trial\.example\tno rule; let through by report entry \*\.trial\.example at .*g\.yaml:6:21 ports 8883\/tcp$/)
  t.match(lines[3], /^block\tapi\.example\.com\tno rule$/, 'the top-level list is not the sensors\' list')
  t.match(lines[4], /^block\tvendor\.example\tno rule \(answered NODATA/)

  const all = await egressd('check', '-c', file, '--client', '192.168.10.7', 'a.vendor.example')
  t.equal(all.code, 0)

  const def = await egressd('check', '-c', file, '--client', '10.0.0.1', 'api.example.com')
  t.equal(def.code, 0)
  t.match(def.stdout, /^group\tdefault\tclient 10\.0\.0\.1 is in no group's clients: the top-level policy\n/)
  const none = await egressd('check', '-c', file, 'api.example.com')
  t.match(none.stdout, /^group\tdefault\tno --client given: the top-level policy\n/)
})

t.test('check --client --json: group, mode, report', async (t) => {
  const r = await egressd('check', '-c', file, '--json', '--client', 'fd00::9', 'anything.example.org')
  t.equal(r.code, 1)
  t.match(JSON.parse(r.stdout), {
    name: 'anything.example.org', verdict: 'would_block', dns: 'answer', group: 'onboarding', mode: 'report', report: true,
    report_rule: null, ports: ['443/tcp', '123/udp'],
  })
  const s = await egressd('check', '-c', file, '--json', '--client', '192.168.10.1', 'x.trial.example', 'evil.example')
  const [a, b] = s.stdout.trim().split('\n').map((l) => JSON.parse(l))
  t.match(a, { verdict: 'would_block', group: 'sensors', mode: 'enforce', report: true, report_rule: '*.trial.example', ports: ['8883/tcp'] })
  t.match(b, { verdict: 'block', dns: 'nxdomain', report: false, report_rule: null })
})

t.test('check --client with a bad address, validate lists groups', async (t) => {
  const bad = await egressd('check', '-c', file, '--client', 'not-an-ip', 'a.example')
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--client "not-an-ip" is not an IP address/)
  const v = await egressd('validate', '-c', file)
  t.equal(v.code, 0, v.stderr)
  t.match(v.stdout, /groups: sensors \(1 rules\), onboarding \(0 rules, report\)/)
})
