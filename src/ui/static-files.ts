/**
 * The page's three files (static/), read once at first use and served from memory. They
 * are shipped in the package: `npm run build` copies src/ui/static to dist/ui/static,
 * next to this module in both trees. No CDN, no framework: ~30 KB in all.
 */
import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import { fileURLToPath } from 'node:url'

const DIR = fileURLToPath(new URL('./static/', import.meta.url))

const TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
}

/**
 * Scripts and styles only from this origin, no inline script or style, no frames, no
 * plugins: a device-controlled string that reached the DOM as markup still could not run.
 * The page builds its DOM with textContent, so this is the second line, not the first.
 */
export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

export class StaticFiles {
  private readonly cache = new Map<string, Buffer>()

  serve(name: string, res: ServerResponse): void {
    let body = this.cache.get(name)
    if (body === undefined) {
      try {
        body = readFileSync(DIR + name)
      } catch (e) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`status page file ${name} missing: ${(e as Error).message}\n`)
        return
      }
      this.cache.set(name, body)
    }
    res.writeHead(200, {
      'content-type': TYPES[name] ?? 'application/octet-stream',
      'content-length': body.length,
      'cache-control': 'no-cache',
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
    })
    res.end(body)
  }
}
