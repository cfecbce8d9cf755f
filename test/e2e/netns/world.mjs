// The fake internet of test/e2e/gateway-netns.test.ts, run inside the world namespace
// with `ip netns exec WORLD node world.mjs SPEC.json`. Plain ESM because a child process
// cannot use tap's TypeScript loader; dns2 and dns-packet resolve from the repo's
// node_modules by walking up from this file.
//
// SPEC: { dns: {host, port, zone: {name: address | [address…]}}, https: [{host, port,
// certFile, keyFile, body}], udp: [{host, port}] }. Hosts may be IPv4 or IPv6; a name
// gets A records for its IPv4 addresses and AAAA records for its IPv6 ones.
// Control channel: one JSON object per line on stdout, in the order things happened:
// {"ev":"ready"}, {"ev":"dns",name,type,transport}, {"ev":"tcp",server,remote},
// {"ev":"https",server,servername,host,remote}, {"ev":"udp",server,port,from,data}.
// Every UDP datagram is answered with "pong " + its text, so a sender learns that its
// packet passed the gateway both ways. Stops on SIGTERM or when stdin closes.
import { readFileSync } from 'node:fs'
import dgram from 'node:dgram'
import https from 'node:https'
import dnsPacket from 'dns-packet'
import dns2 from 'dns2'

// `npx tap test/e2e` runs every file of a folder it is given: say this is no test.
if (process.argv.length < 3) {
  process.stdout.write('1..0 # a helper of test/e2e/gateway-netns.test.ts, not a test\n')
  process.exit(0)
}

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const closers = []

// `spec.dns.ttl`: the device-scope test needs answers that expire within the test.
const TTL = spec.dns.ttl ?? 300
const SOA = { type: 'SOA', name: 'example', ttl: TTL, data: { mname: 'ns.example', rname: 'hostmaster.example', serial: 1, refresh: 3600, retry: 600, expire: 86400, minimum: 60 } }

/** Authoritative for `spec.dns.zone`: A for its names, NODATA for their other types, NXDOMAIN for the rest. */
function answer(request, transport) {
  const q = request.questions[0]
  const name = String(q.name).toLowerCase().replace(/\.$/, '')
  const typeName = { 1: 'A', 28: 'AAAA' }[Number(q.type)] ?? `UNKNOWN_${q.type}`
  emit({ ev: 'dns', name, type: typeName, transport })
  const known = spec.dns.zone[name]
  const base = { type: 'response', id: request.header.id, flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED, questions: [{ name: q.name, type: typeName, class: 'IN' }] }
  if (known === undefined) return dnsPacket.encode({ ...base, flags: base.flags | 3, answers: [], authorities: [SOA] })
  const addresses = [known].flat().filter((a) => (typeName === 'AAAA' ? a.includes(':') : typeName === 'A' && !a.includes(':')))
  if (addresses.length === 0) return dnsPacket.encode({ ...base, answers: [], authorities: [SOA] })
  return dnsPacket.encode({ ...base, answers: addresses.map((data) => ({ type: typeName, name: q.name, ttl: TTL, data })) })
}

async function startDns() {
  const { host, port } = spec.dns
  const tcp = new dns2.TCPServer()
  tcp.on('request', (req, send) => send(answer(req, 'tcp')))
  tcp.on('requestError', () => {})
  await new Promise((resolve) => tcp.listen(port, host, resolve))
  const udp = new dns2.UDPServer()
  udp.on('request', (req, send) => send(answer(req, 'udp')))
  udp.on('requestError', () => {})
  await udp.listen(port, host)
  closers.push(() => new Promise((r) => udp.close(() => r())), () => new Promise((r) => tcp.close(() => r())))
}

async function startHttps(s) {
  const server = https.createServer({ cert: readFileSync(s.certFile), key: readFileSync(s.keyFile) }, (req, res) => {
    emit({ ev: 'https', server: s.host, servername: req.socket.servername ?? null, host: req.headers.host ?? null, remote: req.socket.remoteAddress })
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' })
    res.end(s.body)
  })
  server.on('connection', (sock) => emit({ ev: 'tcp', server: s.host, remote: sock.remoteAddress }))
  server.on('tlsClientError', () => {})
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(s.port, s.host, resolve)
  })
  closers.push(() => new Promise((r) => (server.closeAllConnections(), server.close(() => r()))))
}

async function startUdp(s) {
  const sock = dgram.createSocket(s.host.includes(':') ? 'udp6' : 'udp4')
  sock.on('message', (msg, rinfo) => {
    const data = msg.toString('utf8', 0, Math.min(msg.length, 200))
    emit({ ev: 'udp', server: s.host, port: s.port, from: rinfo.address, data })
    sock.send(`pong ${data}`, rinfo.port, rinfo.address)
  })
  await new Promise((resolve, reject) => {
    sock.once('error', reject)
    sock.bind(s.port, s.host, resolve)
  })
  closers.push(() => new Promise((r) => sock.close(() => r())))
}

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  await Promise.allSettled(closers.map((c) => c()))
  process.exit(0)
}
process.on('SIGTERM', stop)
process.stdin.on('end', stop)
process.stdin.resume()

try {
  await startDns()
  for (const s of spec.https) await startHttps(s)
  for (const s of spec.udp) await startUdp(s)
  emit({ ev: 'ready' })
} catch (err) {
  process.stderr.write(`world: ${err.stack ?? err}\n`)
  process.exit(1)
}
