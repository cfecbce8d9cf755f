/**
 * The folder rules of src/, read from the import statements themselves (TypeScript's own
 * parser, so type-only imports, re-exports and dynamic import() count too):
 *   - net/ imports nothing from any other part of src/ and no socket module: the pure
 *     address library everything else shares;
 *   - policy/ imports only net/ and src/errors.ts: the decision stays pure (no dns/, sni/,
 *     metrics/, firewall/, daemon/, config/, log/);
 *   - config/ imports no socket code: no node:net/dgram/tls/http(s)/http2, nothing from
 *     dns/, sni/, firewall/, metrics/ or daemon/;
 *   - dns/ imports nothing from sni/;
 *   - no two parts of src/ import each other, directly or around a longer cycle. A part is
 *     a folder, or a file at the top of src/ (cli.ts and errors.ts are different parts).
 */
import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src')
const SOCKET_MODULES = ['node:net', 'node:dgram', 'node:tls', 'node:http', 'node:https', 'node:http2']

interface Edge {
  readonly file: string // relative to src/
  readonly from: string // part
  readonly to: string // part, or the bare module name for node: and packages
  readonly specifier: string
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sourceFiles(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : [],
  )
}

/** `dns` for src/dns/x.ts, `errors.ts` for src/errors.ts. */
function partOf(fileRelativeToSrc: string): string {
  const slash = fileRelativeToSrc.indexOf('/')
  return slash < 0 ? fileRelativeToSrc : fileRelativeToSrc.slice(0, slash)
}

/** Every module specifier in a source text: import/export … from, import(), import x = require(). */
export function specifiers(fileName: string, text: string): string[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS)
  const out: string[] = []
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push(node.moduleSpecifier.text)
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteralLike(node.arguments[0])) {
      out.push(node.arguments[0].text)
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) && ts.isStringLiteral(node.moduleReference.expression)) {
      out.push(node.moduleReference.expression.text)
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push(node.argument.literal.text)
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

function edges(): { edges: Edge[]; unresolved: string[] } {
  const all: Edge[] = []
  const unresolved: string[] = []
  for (const path of sourceFiles(SRC)) {
    const file = relative(SRC, path)
    for (const specifier of specifiers(path, readFileSync(path, 'utf8'))) {
      if (!specifier.startsWith('.')) {
        all.push({ file, from: partOf(file), to: specifier, specifier })
        continue
      }
      const target = resolve(dirname(path), specifier.replace(/\.js$/, '.ts'))
      if (!existsSync(target)) unresolved.push(`${file}: ${specifier}`)
      const rel = relative(SRC, target)
      all.push({ file, from: partOf(file), to: rel.startsWith('..') ? rel : partOf(rel), specifier })
    }
  }
  return { edges: all, unresolved }
}

/** Cycles among parts: each strongly connected component of more than one part (Tarjan). */
export function cycles(graph: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  let index = 0
  const idx = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const on = new Set<string>()
  const out: string[][] = []
  const strong = (v: string): void => {
    idx.set(v, index)
    low.set(v, index++)
    stack.push(v)
    on.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        strong(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!))
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = []
      let w: string
      do {
        w = stack.pop()!
        on.delete(w)
        comp.push(w)
      } while (w !== v)
      if (comp.length > 1) out.push(comp.sort())
    }
  }
  for (const v of graph.keys()) if (!idx.has(v)) strong(v)
  return out
}

function partGraph(list: readonly Edge[]): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>()
  for (const e of list) {
    if (e.to.startsWith('node:') || !isPart(e.to) || e.from === e.to) continue
    if (!g.has(e.from)) g.set(e.from, new Set())
    if (!g.has(e.to)) g.set(e.to, new Set())
    g.get(e.from)!.add(e.to)
  }
  return g
}

const PARTS = new Set(readdirSync(SRC, { withFileTypes: true }).map((d) => d.name))
function isPart(name: string): boolean {
  return PARTS.has(name)
}

const { edges: EDGES, unresolved } = edges()
const violations = (from: string, bad: (e: Edge) => boolean) =>
  EDGES.filter((e) => e.from === from && bad(e)).map((e) => `${e.file} imports ${e.specifier}`)

t.test('the parser sees the imports (a rule over nothing would pass by itself)', async (t) => {
  t.same(unresolved, [], 'every relative import names a file that exists')
  const seen = new Set(EDGES.map((e) => `${e.from} -> ${e.to}`))
  for (const edge of ['dns -> net', 'policy -> net', 'config -> policy', 'daemon -> dns', 'sni -> policy', 'cli.ts -> config', 'dns -> node:dgram']) {
    t.ok(seen.has(edge), edge)
  }
  t.same(
    specifiers('x.ts', "import a from './a.js'\nimport type { B } from '../b.js'\nexport { c } from './c.js'\nexport * from 'd'\nconst e = await import('./e.js')\ntype F = import('./f.js').F\nimport g = require('g')\n"),
    ['./a.js', '../b.js', './c.js', 'd', './e.js', './f.js', 'g'],
  )
})

t.test('net/ imports nothing from the rest of src/ and no socket module', async (t) => {
  t.same(violations('net', (e) => (e.to !== 'net' && !e.to.startsWith('node:') && e.specifier.startsWith('.')) || SOCKET_MODULES.includes(e.to)), [])
})

t.test('policy/ imports only net/ and errors.ts', async (t) => {
  const allowed = new Set(['policy', 'net', 'errors.ts'])
  t.same(violations('policy', (e) => (e.specifier.startsWith('.') && !allowed.has(e.to)) || SOCKET_MODULES.includes(e.to)), [])
})

t.test('config/ imports no socket code', async (t) => {
  const banned = new Set(['dns', 'sni', 'firewall', 'metrics', 'daemon', ...SOCKET_MODULES])
  t.same(violations('config', (e) => banned.has(e.to)), [])
})

t.test('dns/ imports nothing from sni/', async (t) => {
  t.same(violations('dns', (e) => e.to === 'sni'), [])
})

t.test('no two parts of src/ import each other, directly or around a cycle', async (t) => {
  t.same(cycles(partGraph(EDGES)), [])
})

t.test('the cycle finder finds cycles', async (t) => {
  const g = (pairs: string[]) => {
    const m = new Map<string, Set<string>>()
    for (const p of pairs) {
      const [a, b] = p.split('>') as [string, string]
      if (!m.has(a)) m.set(a, new Set())
      if (!m.has(b)) m.set(b, new Set())
      m.get(a)!.add(b)
    }
    return m
  }
  t.same(cycles(g(['config>policy', 'policy>config', 'dns>net'])), [['config', 'policy']])
  t.same(cycles(g(['a>b', 'b>c', 'c>a', 'c>d'])), [['a', 'b', 'c']])
  t.same(cycles(g(['a>b', 'b>c', 'a>c'])), [])
})
