import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'

/**
 * A clone of egressd is all a user has: no tracked file may point at files that lived
 * beside the repository while it was being written (a shared folder one level up and
 * its design, style and dependency notes). The needles are built from parts so this
 * file does not match itself.
 */
const up = '..' + '/'
const needles = [
  up + 'shared',
  'shared' + '/',
  'DESIGN' + '.md',
  'STYLE' + '.md',
  'DEPENDENCIES' + '.md',
]

let files: string[] = []
try {
  files = execFileSync('git', ['ls-files', '-z'], { encoding: 'utf8' }).split('\0').filter((f) => f !== '')
} catch {
  // An unpacked npm tarball or a source package has no .git: nothing to list.
}

t.test('no tracked file points outside the repository', { skip: files.length === 0 ? 'not a git checkout (git ls-files listed nothing)' : false }, async (t) => {
  const hits: string[] = []
  let scanned = 0
  for (const file of files) {
    let text: string
    try {
      // Deleted-but-unstaged files and submodules are not regular files; skip them.
      if (!statSync(file).isFile()) continue
      text = readFileSync(file, 'utf8')
    } catch {
      continue
    }
    scanned++
    const lines = text.split('\n')
    for (let i = 0; i < lines.length; i++) {
      for (const n of needles) if (lines[i]!.includes(n)) hits.push(`${file}:${i + 1}: mentions "${n}"`)
    }
  }
  t.ok(scanned > 50, `${scanned} tracked files scanned`)
  t.same(hits, [], hits.join('\n'))
})
