/**
 * A throwaway CA and leaf certificates for TLS tests, made with node-forge. forge calls
 * Node's native RSA keygen (~100 ms for 2048 bits); a CA and a leaf with SAN sign in
 * ~40 ms each. All leaves of one CA share one key pair: tests check names and chains,
 * not keys, and it keeps a suite's setup well under a second.
 */
import forge from 'node-forge'

export interface TestCa {
  /** PEM, for `ca:` options and `curl --cacert`. */
  readonly cert: string
  /** A leaf for DNS `names`; `ips` adds IP SANs; `expired` makes it valid yesterday only. */
  issue(names: string[], opts?: { ips?: string[]; expired?: boolean }): { cert: string; key: string }
}

let serial = 1

export function createTestCa(commonName = 'egressd test CA'): TestCa {
  const caKeys = forge.pki.rsa.generateKeyPair({ bits: 2048 })
  const leafKeys = forge.pki.rsa.generateKeyPair({ bits: 2048 })
  const caCert = forge.pki.createCertificate()
  caCert.publicKey = caKeys.publicKey
  caCert.serialNumber = (serial++).toString(16).padStart(2, '0')
  caCert.validity.notBefore = new Date(Date.now() - 3600_000)
  caCert.validity.notAfter = new Date(Date.now() + 7 * 86400_000)
  const caSubject = [{ name: 'commonName', value: commonName }]
  caCert.setSubject(caSubject)
  caCert.setIssuer(caSubject)
  caCert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  caCert.sign(caKeys.privateKey, forge.md.sha256.create())
  const caPem = forge.pki.certificateToPem(caCert)
  const leafKeyPem = forge.pki.privateKeyToPem(leafKeys.privateKey)

  return {
    cert: caPem,
    issue(names: string[], opts: { ips?: string[]; expired?: boolean } = {}) {
      const cert = forge.pki.createCertificate()
      cert.publicKey = leafKeys.publicKey
      cert.serialNumber = (serial++).toString(16).padStart(2, '0')
      cert.validity.notBefore = new Date(Date.now() - (opts.expired ? 2 * 86400_000 : 3600_000))
      cert.validity.notAfter = new Date(Date.now() + (opts.expired ? -86400_000 : 7 * 86400_000))
      cert.setSubject([{ name: 'commonName', value: names[0]! }])
      cert.setIssuer(caSubject)
      cert.setExtensions([
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [...names.map((value) => ({ type: 2, value })), ...(opts.ips ?? []).map((ip) => ({ type: 7, ip }))] },
      ])
      cert.sign(caKeys.privateKey, forge.md.sha256.create())
      return { cert: forge.pki.certificateToPem(cert), key: leafKeyPem }
    },
  }
}
