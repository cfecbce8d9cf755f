/**
 * `node reset-server.js PORT`: resets every connection on its first bytes. The ceiling
 * for the blocked-hello test: what the load generator can do against a server whose only
 * work is accept, read, reset.
 */
import { createServer } from 'node:net'

const server = createServer((socket) => {
  socket.once('data', () => socket.resetAndDestroy())
  socket.on('error', () => {})
})
server.maxConnections = 100_000
server.listen({ port: Number(process.argv[2]), host: '127.0.0.1', backlog: 4096 })
process.on('SIGTERM', () => process.exit(0))
