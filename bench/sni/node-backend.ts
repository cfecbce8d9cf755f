/**
 * Fallback backend when nginx cannot be had: `node node-backend.js PORT CERT KEY BIG_BYTES`.
 * Same routes and the same big body as the nginx one (bigBody in backend.ts).
 */
import { constants } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { bigBody, SMALL_BODY } from './backend.js'

const [portText, certFile, keyFile, bigText] = process.argv.slice(2)
const big = bigBody(Number(bigText))
const CHUNK = 256 * 1024

const server = createServer({
  cert: readFileSync(certFile!),
  key: readFileSync(keyFile!),
  // Every connection a full handshake, as with nginx (no tickets, no session cache).
  secureOptions: constants.SSL_OP_NO_TICKET,
  sessionTimeout: 0,
}, (req, res) => {
  if (req.url === '/small') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL_BODY.length })
    res.end(SMALL_BODY)
    return
  }
  if (req.url !== '/big') {
    res.writeHead(404).end()
    return
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': big.length })
  let off = 0
  const pump = (): void => {
    while (off < big.length) {
      const end = Math.min(off + CHUNK, big.length)
      const more = res.write(big.subarray(off, end))
      off = end
      if (!more) return void res.once('drain', pump)
    }
    res.end()
  }
  pump()
})
server.keepAliveTimeout = 600_000
server.headersTimeout = 600_000
server.requestTimeout = 0
server.maxConnections = 100_000
server.listen(Number(portText), '127.0.0.1')
process.on('SIGTERM', () => process.exit(0))
