// Writes the machine-readable debian/copyright (DEP-5) for the staged package: egressd
// itself under Apache-2.0 (common-licenses has its text), then one stanza per bundled
// npm package under usr/lib/egressd/node_modules with the license text that package
// ships. Generated, not kept by hand, so it cannot drift from what the lockfile installs.
//
//   node copyright.mjs STAGED_LIB_DIR > copyright
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const lib = process.argv[2]
if (!lib) throw new Error('usage: node copyright.mjs STAGED_LIB_DIR')

function packages(dir) {
  const out = []
  if (!existsSync(dir)) return out
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue
    if (name.startsWith('@')) {
      for (const sub of readdirSync(join(dir, name)).sort()) out.push(...pkg(join(dir, name, sub)))
    } else out.push(...pkg(join(dir, name)))
  }
  return out
}

function pkg(dir) {
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  const licenseFile = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f))
  return [{ dir, meta, text: licenseFile ? readFileSync(join(dir, licenseFile), 'utf8') : null }, ...packages(join(dir, 'node_modules'))]
}

/** DEP-5 continuation lines: one leading space, empty lines as " .". */
const indent = (text) => text.replace(/\r/g, '').trimEnd().split('\n').map((l) => (l.trim() === '' ? ' .' : ' ' + l.replace(/\t/g, '    '))).join('\n')

const COMMON = new Set(['Apache-2.0', 'GPL-2', 'GPL-3', 'LGPL-2.1', 'LGPL-3', 'MPL-2.0', 'CC0-1.0'])
const author = (m) => (typeof m.author === 'string' ? m.author : m.author?.name) ?? `the ${m.name} authors`
const out = [
  'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
  'Upstream-Name: egressd',
  'Comment: Built from the egressd npm tarball by packaging/deb/build.sh; the',
  ' node_modules stanzas are generated from the bundled packages.',
  '',
  'Files: *',
  'Copyright: 2026 egressd developers',
  'License: Apache-2.0',
  ' On Debian systems the full text of the Apache License 2.0 is in',
  ' /usr/share/common-licenses/Apache-2.0.',
  '',
]
for (const { dir, meta, text } of packages(join(lib, 'node_modules'))) {
  const rel = dir.slice(dir.indexOf('node_modules')).replace(/\\/g, '/')
  const license = typeof meta.license === 'string' ? meta.license : 'see-below'
  out.push(`Files: usr/lib/egressd/${rel}/*`, `Copyright: ${author(meta)}`, `License: ${license}`)
  // Licenses Debian keeps in /usr/share/common-licenses are referred to, not repeated
  // (lintian: copyright-file-contains-full-apache-2-license is an error).
  if (COMMON.has(license)) out.push(` On Debian systems the full text is in /usr/share/common-licenses/${license}.`)
  else out.push(text ? indent(text) : ` ${meta.name} ${meta.version} ships no license file; its package.json says "${license}".`)
  out.push('')
}
process.stdout.write(out.join('\n'))
