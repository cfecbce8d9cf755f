import https from 'node:https'
import { mkdtempSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fakeUpstream, type FakeUpstream } from '../dns/helpers.js'
import { createTestCa } from './certs.js'

interface Teardown {
  teardown(fn: () => unknown): void
}

/**
 * An HTTPS server on 127.0.0.1 with a certificate for `names` from a fresh test CA,
 * answering `served <host>`; `caFile` is the CA for curl's --cacert. Closed at teardown.
 */
export async function startTlsSite(t: Teardown, names: string[]): Promise<{ port: number; caFile: string }> {
  const ca = createTestCa()
  const caFile = join(mkdtempSync(join(tmpdir(), 'egressd-site-')), 'ca.pem')
  writeFileSync(caFile, ca.cert)
  const web = https.createServer(ca.issue(names), (req, res) => res.end(`served ${req.headers.host}`))
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((r) => web.close(r)))
  return { port: (web.address() as AddressInfo).port, caFile }
}

/** A DNS upstream answering every A query with 127.0.0.1 (and nothing for other types). */
export async function loopbackUpstream(t: Teardown): Promise<FakeUpstream> {
  const up = await fakeUpstream((q) =>
    q.type === 'A' ? ({ answers: [{ name: q.name, type: 'A', ttl: 60, data: '127.0.0.1' }] } as never) : ({ answers: [] } as never),
  )
  t.teardown(() => up.close())
  return up
}
