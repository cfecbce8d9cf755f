/**
 * `npm run bench -- config [--cli PATH]… [--quick]`: what large and hostile
 * configurations cost `egressd validate` (load + compile, the work of a start or a
 * reload): wall and CPU time, peak RSS and the exit code, one process per case,
 * measured by /usr/bin/time. Several `--cli` compare builds in the same run, case by
 * case (the tree's dist/cli.js by default).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

interface Case {
  readonly name: string
  readonly text: () => string
  readonly env?: Record<string, string>
}

const list = (n: number): string => {
  const lines = ['allow:']
  for (let i = 0; i < n; i++) lines.push(`  - h${i}.example.com`)
  return lines.join('\n') + '\n'
}

function cases(quick: boolean): Case[] {
  const out: Case[] = [
    { name: '200 000 allow entries', text: () => list(200_000) },
    { name: '1 000 000 allow entries (32M limit)', text: () => list(1_000_000), env: { EGRESSD_MAX_CONFIG_BYTES: '32M' } },
    { name: '17 MiB list (over the 16 MiB default)', text: () => list(Math.ceil((17 << 20) / 20)).slice(0, 17 << 20) },
    { name: '50 MB quoted scalar', text: () => `dns:\n  listen: ["${'a'.repeat(50_000_000)}"]\n` },
    {
      name: 'brace bomb: 300 entries x 10 000 names (11 KB)',
      text: () => 'allow:\n' + Array.from({ length: 300 }, (_, i) => `  - "{0..99}{0..99}.b${i}.example.com"\n`).join(''),
    },
  ]
  return quick ? out.filter((c) => !c.name.startsWith('1 000 000') && !c.name.startsWith('50 MB')) : out
}

export async function run(args: string[]): Promise<void> {
  const clis: string[] = []
  for (let i = 0; i < args.length; i++) if (args[i] === '--cli') clis.push(args[++i]!)
  if (clis.length === 0) clis.push(fileURLToPath(new URL('../../dist/cli.js', import.meta.url)))
  if (!existsSync('/usr/bin/time')) throw new Error('needs /usr/bin/time (Debian package time) for peak RSS')
  const dir = mkdtempSync(join(tmpdir(), 'egressd-bench-config-'))
  const rows: Record<string, unknown>[] = []
  try {
    for (const c of cases(args.includes('--quick'))) {
      const file = join(dir, 'config.yaml')
      writeFileSync(file, c.text())
      for (const cli of clis) {
        const r = spawnSync('/usr/bin/time', ['-f', 'TIME %e %U %M', process.execPath, cli, 'validate', '-c', file], {
          env: { ...process.env, ...c.env },
          encoding: 'utf8',
          maxBuffer: 1 << 30,
          timeout: 600_000,
        })
        const m = /TIME ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr ?? '')
        const exit = /Command exited with non-zero status (\d+)/.exec(r.stderr ?? '')
        const firstLine = (r.stderr ?? '').split('\n').find((l) => !l.startsWith('TIME') && !l.startsWith('Command exited')) ?? ''
        const row = {
          case: c.name,
          cli,
          exit: exit ? Number(exit[1]) : r.status,
          wallS: m ? Number(m[1]) : null,
          cpuS: m ? Number(m[2]) : null,
          maxRssMB: m ? Math.round(Number(m[3]) / 1024) : null,
          stderrBytes: (r.stderr ?? '').length,
          message: firstLine.slice(0, 160),
          stdout: (r.stdout ?? '').trim().slice(-80),
        }
        rows.push(row)
        process.stdout.write(JSON.stringify(row) + '\n')
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  process.stdout.write('\n| case | cli | exit | wall s | user CPU s | peak RSS MB | stderr bytes |\n|---|---|---|---|---|---|---|\n')
  for (const r of rows) process.stdout.write(`| ${r.case} | ${r.cli} | ${r.exit} | ${r.wallS} | ${r.cpuS} | ${r.maxRssMB} | ${r.stderrBytes} |\n`)
}
