/**
 * A throwaway CA and a `bench.example` leaf made with `openssl req`. ECDSA P-256 by
 * default: the proxies never touch the crypto, so the cheaper the handshake the larger
 * the share of each connection that is proxy work, and the more the comparison says.
 * `rsa` (2048) is there to see the figures with the handshake most devices still do.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export type KeyType = 'ec' | 'rsa'

export interface Pki {
  readonly caPem: string
  readonly certFile: string
  readonly keyFile: string
  readonly keyType: KeyType
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] })
}

function genKey(file: string, keyType: KeyType): void {
  openssl(keyType === 'ec'
    ? ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]
    : ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', file])
}

export function makePki(dir: string, keyType: KeyType, name = 'bench.example'): Pki {
  const caKey = join(dir, 'ca.key')
  const caCert = join(dir, 'ca.pem')
  const keyFile = join(dir, 'leaf.key')
  const csr = join(dir, 'leaf.csr')
  const certFile = join(dir, 'leaf.pem')
  const ext = join(dir, 'leaf.ext')
  genKey(caKey, keyType)
  openssl(['req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '2', '-subj', '/CN=egressd bench CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', caCert])
  genKey(keyFile, keyType)
  openssl(['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-out', csr])
  writeFileSync(ext, `subjectAltName=DNS:${name}\nbasicConstraints=CA:FALSE\n` +
    `keyUsage=critical,digitalSignature${keyType === 'rsa' ? ',keyEncipherment' : ''}\nextendedKeyUsage=serverAuth\n`)
  openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-CAcreateserial', '-days', '2', '-sha256',
    '-extfile', ext, '-out', certFile])
  return { caPem: readFileSync(caCert, 'utf8'), certFile, keyFile, keyType }
}
