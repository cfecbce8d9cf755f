/**
 * `dns.upstream_ca_file`: a PEM bundle of the CAs that sign the encrypted upstreams'
 * certificates. Read by the loader (so `validate` and a reload report a bad file at its
 * line) and again by the DNS transports when they are configured.
 */
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'

/** PEM bundles this large hold thousands of certificates; Debian's whole store is ~220 KB. */
export const MAX_CA_FILE_BYTES = 4 * 1024 * 1024

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g

/** The certificates of a PEM bundle, each as PEM text, or a message saying why not. */
export function readCaFile(path: string): string[] | string {
  let text: string
  try {
    const buf = readFileSync(path)
    if (buf.length > MAX_CA_FILE_BYTES) return `${path} is ${buf.length} bytes; at most ${MAX_CA_FILE_BYTES} are read`
    text = buf.toString('latin1')
  } catch (e) {
    return `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`
  }
  const blocks = text.match(PEM_BLOCK) ?? []
  if (blocks.length === 0) return `${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`
  for (const [i, pem] of blocks.entries()) {
    try {
      const cert = new X509Certificate(pem)
      if (!cert.ca) return `${path}: certificate ${i + 1} (${cert.subject.replaceAll('\n', ', ')}) is not a CA certificate`
    } catch (e) {
      return `${path}: certificate ${i + 1} does not parse: ${(e as Error).message}`
    }
  }
  return blocks
}
