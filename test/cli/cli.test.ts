import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// The built CLI as a process: `npm test` builds dist/ before tap runs.
const CLI = join(process.cwd(), 'dist', 'cli.js')
const dir = mkdtempSync(join(tmpdir(), 'egressd-cli-'))

function egressd(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr })
    })
  })
}

function configFile(name: string, text: string): string {
  const file = join(dir, name)
  writeFileSync(file, text)
  return file
}

const good = configFile('good.yaml', [
  'presets: [dt-cloud-connector-gen2]',
  'allow:',
  '  - "*.example.net"',
  '  - {name: "ntp{1..2}.example.org", ports: [123/udp]}',
  '  - "bücher.example"',
  'deny: ["bad.example.net"]',
  '',
].join('\n'))

t.test('check: allow, block, the deciding rule and exit codes', async (t) => {
  const r = await egressd('check', '-c', good, 'ccon-manager.prod.disruptive-technologies.com', 'API.Example.NET.')
  t.equal(r.code, 0, r.stderr)
  const lines = r.stdout.trim().split('\n')
  t.match(lines[0], /^allow\tccon-manager\.prod\.disruptive-technologies\.com\tallow ccon-manager\.prod\.disruptive-technologies\.com at preset dt-cloud-connector-gen2 \(\/.*\/config\/presets\/dt-cloud-connector-gen2\.yaml:\d+:\d+\) ports 443\/tcp$/)
  t.match(lines[1], /^allow\tAPI\.Example\.NET\.\tallow \*\.example\.net at .*good\.yaml:3:5 ports 443\/tcp$/)

  const b = await egressd('check', '-c', good, 'example.net', 'bad.example.net', 'evil.com', 'prod.disruptive-technologies.com')
  t.equal(b.code, 1)
  const out = b.stdout.trim().split('\n')
  t.match(out[0], /^block\texample\.net\tno rule \(answered NODATA: allowed names exist below it\)$/, 'the apex is not under its wildcard')
  t.match(out[1], /^block\tbad\.example\.net\tdeny bad\.example\.net at .*good\.yaml:6:8 \(answered NODATA: allowed names exist below it\)$/, 'deny wins over the wildcard; names below it stay allowed')
  t.match(out[2], /^block\tevil\.com\tno rule$/)
  t.match(out[3], /NODATA/)
})

t.test('check --json, brace expansion and punycode', async (t) => {
  const r = await egressd('check', '-c', good, '--json', 'ntp2.example.org', 'ntp3.example.org', 'bücher.example')
  t.equal(r.code, 1)
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l))
  t.match(rows[0], { name: 'ntp2.example.org', verdict: 'allow', rule: 'ntp2.example.org', entry: 'ntp{1..2}.example.org', ports: ['123/udp'], dns: 'answer' })
  t.match(rows[1], { name: 'ntp3.example.org', verdict: 'block', rule: null, dns: 'nxdomain' })
  t.match(rows[2], { name: 'bücher.example', ascii: 'xn--bcher-kva.example', verdict: 'allow', rule: 'xn--bcher-kva.example' })
})

t.test('validate: exit 0, warnings, exit 2 with file:line:col lines', async (t) => {
  const ok = await egressd('validate', '-c', good)
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /valid; \d+ rules from 9 entries \(presets: dt-cloud-connector-gen2\)/)

  const dup = configFile('dup.yaml', 'allow: ["*.example.com", "a.example.com", "*.example.com"]\n')
  const w = await egressd('validate', '-c', dup)
  t.equal(w.code, 0)
  t.match(w.stderr, /dup\.yaml:1:26: warning: "a\.example\.com" already is allowed by "\*\.example\.com"/)
  t.match(w.stderr, /dup\.yaml:1:43: warning: .*duplicate/i)

  const bad = configFile('bad.yaml', 'dns:\n  upstreams: ["quic://8.8.8.8"]\nallow: ["*", "a*.example.com"]\n')
  const v = await egressd('validate', '-c', bad)
  t.equal(v.code, 2)
  const lines = v.stderr.trim().split('\n')
  t.equal(lines.length, 3, v.stderr)
  for (const l of lines) t.match(l, /^.*bad\.yaml:\d+:\d+: /)
  t.match(lines[0], /bad\.yaml:2:15: dns\.upstreams: quic:\/\/ upstreams are not supported \(DNS over QUIC\)/)
  t.notMatch(v.stderr, /    at /, 'no stack trace')

  const c = await egressd('check', '-c', bad, 'a.example.com')
  t.equal(c.code, 2, 'check exits 2 on a bad configuration')
  const missing = await egressd('validate', '-c', join(dir, 'nope.yaml'))
  t.equal(missing.code, 2)
  t.match(missing.stderr, /nope\.yaml:1:1: cannot read configuration: no such file/)
})

t.test('help, version, usage errors', async (t) => {
  const h = await egressd('--help')
  t.equal(h.code, 0)
  t.match(h.stdout, /egressd run \[-c FILE\]/)
  const v = await egressd('--version')
  t.equal(v.code, 0)
  t.match(v.stdout, /^\d+\.\d+\.\d+\n$/)
  t.equal((await egressd('frobnicate')).code, 2)
  const noConfig = await egressd('check', 'x.example.com')
  t.equal(noConfig.code, 1, 'without -c: /etc/egressd/egressd.yaml or the packaged default, which blocks it')
  t.equal((await egressd('validate', '-c')).code, 2)
})

t.test('per-command help: `help COMMAND` and `COMMAND --help` print its usage and examples', async (t) => {
  for (const command of ['run', 'check', 'suggest', 'validate', 'reload', 'help']) {
    const a = await egressd('help', command)
    const b = await egressd(command, '--help')
    const c = await egressd(command, '-h')
    t.equal(a.code, 0, `help ${command}`)
    t.match(a.stdout, new RegExp(`^usage: egressd ${command} `))
    t.match(a.stdout, /\nexamples:\n {2}\S/)
    t.equal(b.stdout, a.stdout, `${command} --help is help ${command}`)
    t.equal(c.stdout, a.stdout, `${command} -h is help ${command}`)
  }
  const about = await egressd('help', 'check', '--help')
  t.equal(about.stdout, (await egressd('help', 'check')).stdout, 'help check --help is help check')
  const unknown = await egressd('help', 'frobnicate')
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command "frobnicate"/)
  const all = await egressd('help')
  t.equal(all.code, 0)
  for (const command of ['run', 'check', 'suggest', 'validate', 'reload', 'help']) t.match(all.stdout, new RegExp(`egressd ${command} `))
})

t.test('-c FILE, -cFILE, -c=FILE, --config FILE and --config=FILE all name the file', async (t) => {
  for (const form of [['-c', good], [`-c${good}`], [`-c=${good}`], ['--config', good], [`--config=${good}`]]) {
    const r = await egressd('validate', ...form)
    t.equal(r.code, 0, form.join(' '))
    t.match(r.stdout, /good\.yaml: valid/)
  }
})

t.test('usage errors name the command and the problem, exit 2', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['check', '-c', good, '--bogus', 'x'], /egressd check: unknown option --bogus/],
    [['validate', '-c'], /egressd validate: -c, --config needs a value/],
    [['validate', '-c', good, 'extra'], /egressd validate: unexpected argument "extra"/],
    [['check', '-c', good, '--json=yes', 'x'], /--json takes no value/],
    [['check', '-c', good, '-api.example.net'], /^egressd check: unknown option -a; to name "-api\.example\.net", put -- before it: egressd check -c FILE -- -api\.example\.net\n/],
    [['check', '-c', good], /egressd check: name at least one host name/],
    [['-c', good, 'validate'], /-c goes after the command/],
    [[], /egressd: name a command/],
  ]
  for (const [args, want] of cases) {
    const r = await egressd(...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, want, args.join(' '))
  }
})

t.test('check prints the configuration\'s warnings on stderr, as validate does, and they leave its exit code alone', async (t) => {
  const warned = configFile('warned.yaml', 'allow: [-api.example.net, ok.example.net]\n')
  const ok = await egressd('check', '-c', warned, 'ok.example.net')
  t.equal(ok.code, 0, 'allowed: 0')
  t.equal(ok.stderr, `${warned}:1:9: warning: "-api.example.net": label "-api" starts with a hyphen: no host name can have one\n`)
  t.equal(ok.stdout.split('\n')[0]!.split('\t')[0], 'allow')
  const empty = configFile('empty.yaml', 'deny: [x.example.net]\n')
  const blocked = await egressd('check', '-c', empty, '--json', 'a.example.net')
  t.equal(blocked.code, 1, 'blocked: 1')
  t.match(blocked.stderr, /^.*empty\.yaml: warning: 0 rules: every name is blocked/, 'the empty policy explains the block')
  t.match(JSON.parse(blocked.stdout), { verdict: 'block' }, 'stdout stays one JSON row')
})

t.test('an option that takes a value, given twice, is a usage error: the last one does not silently win', async (t) => {
  const other = configFile('other.yaml', 'allow: []\n')
  const cases: Array<[string[], RegExp]> = [
    [['validate', '--config', good, '--config', other], /^egressd validate: -c, --config given twice \(".*good\.yaml", then ".*other\.yaml"\); name one file\n/],
    [['validate', '-c', good, `--config=${good}`], /^egressd validate: -c, --config given twice/],
    [['validate', `-c=${good}`, '-c', other], /^egressd validate: -c, --config given twice \(".*good\.yaml", then ".*other\.yaml"\)/],
    [['check', '-c', good, '--client', '10.0.0.1', '--client', '10.0.0.2', 'x.example.net'], /^egressd check: --client given twice \("10\.0\.0\.1", then "10\.0\.0\.2"\)/],
    [['suggest', '--threshold', '3', '--threshold', '4', '/dev/null'], /^egressd suggest: --threshold given twice/],
  ]
  for (const [args, want] of cases) {
    const r = await egressd(...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, want, args.join(' '))
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
  }
  t.equal((await egressd('check', '-c', good, '--json', '--json', 'api.example.net')).code, 0, 'a flag given twice is harmless')
})

t.test('check explains a name that cannot be a host name, and still exits 1', async (t) => {
  const r = await egressd('check', '-c', good, 'a b.example.net', 'x..example.net')
  t.equal(r.code, 1)
  t.match(r.stdout, /^block\ta b\.example\.net\tnot a valid host name: contains ' ' \(a space\)$/m)
  t.match(r.stdout, /^block\tx\.\.example\.net\tnot a valid host name: has an empty label/m)
  const j = await egressd('check', '-c', good, '--json', 'a b.example.net')
  t.match(JSON.parse(j.stdout), { verdict: 'block', invalid: "contains ' ' (a space)" })
})
