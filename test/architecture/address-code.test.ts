/**
 * src/net is the one place addresses are parsed (issue #12): no other folder may spell an
 * address form in a string or regular-expression literal (`::ffff:`, a dotted-quad
 * pattern), which is how a second parser starts. Comments do not count: the literals are
 * read with TypeScript's own scanner.
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src')

/** A literal that spells an address form: the IPv4-mapped prefix, or a regex for a dotted quad. */
const ADDRESS_FORM = [/::ffff/i, /\\d(\{1,3\}|\+)\\\./]

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sourceFiles(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : [],
  )
}

/** Every string, template and regular-expression literal of a source text, with its line. */
export function literals(text: string): { line: number; text: string }[] {
  const sf = ts.createSourceFile('x.ts', text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS)
  const out: { line: number; text: string }[] = []
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteralLike(node) || ts.isRegularExpressionLiteral(node) || ts.isTemplateLiteralToken(node)) {
      out.push({ line: sf.getLineAndCharacterOfPosition(node.getStart()).line + 1, text: node.getText() })
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

t.test('the checker sees what it must and skips comments', async (t) => {
  const found = literals("// '::ffff:' in a comment\nconst a = /^::ffff:(\\d+\\.\\d+)$/\nconst b = '::FFFF:'\nconst c = `x`\n")
  t.same(found.filter((l) => ADDRESS_FORM.some((re) => re.test(l.text))).map((l) => l.line), [2, 3])
})

t.test('no folder but src/net spells an address form in a literal', async (t) => {
  const offences: string[] = []
  for (const path of sourceFiles(SRC)) {
    const file = relative(SRC, path)
    if (file.startsWith('net/')) continue
    for (const l of literals(readFileSync(path, 'utf8'))) {
      if (ADDRESS_FORM.some((re) => re.test(l.text))) offences.push(`src/${file}:${l.line}: ${l.text}`)
    }
  }
  t.same(offences, [], 'parse and compare addresses with src/net (parseIp, peerAddress, isLoopbackIp, CidrTable …)')
})
