// Device-side UDP probe of test/e2e/gateway-netns.test.ts, run with
// `ip netns exec DEV node udp-probe.mjs MODE …`; prints one JSON line.
//
//   send ADDR PORT TEXT WAIT_MS
//     one datagram (IPv4 or IPv6, after ADDR), no retry; {"reply": "pong TEXT" | null}.
//   resolve-send DNS_ADDR NAME PORT TEXT WAIT_MS
//     asks DNS_ADDR:53 for NAME/A and sends one datagram to the first address in the
//     same tick the answer arrives, no retry: the packet that would lose a race
//     between the answer and its nft elements. {"rcode", "address", "reply"}.
//
// Environment: FROM=ADDR binds both sockets to ADDR (a second device on the segment is
// a second source address to the gateway); QTYPE=AAAA makes resolve-send ask for AAAA
// (the DNS socket's family follows DNS_ADDR).
import dgram from 'node:dgram'
import dnsPacket from 'dns-packet'

// `npx tap test/e2e` runs every file of a folder it is given: say this is no test.
if (process.argv.length < 3) {
  process.stdout.write('1..0 # a helper of test/e2e/gateway-netns.test.ts, not a test\n')
  process.exit(0)
}

const [mode, ...args] = process.argv.slice(2)
const out = (o) => {
  process.stdout.write(JSON.stringify(o) + '\n')
  process.exit(0)
}

/** Sends `text` to addr:port once; resolves with the first reply's text or null after waitMs. */
function sendOnce(sock, addr, port, text, waitMs) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), waitMs)
    sock.on('message', (m, rinfo) => {
      if (rinfo.address !== addr || rinfo.port !== port) return
      clearTimeout(timer)
      resolve(m.toString('utf8'))
    })
    sock.send(text, port, addr)
  })
}

// The family of the address datagrams go to: the first argument of `send`; `resolve-send` asks for A.
const from = process.env.FROM || undefined
const qtype = process.env.QTYPE === 'AAAA' ? 'AAAA' : 'A'
const sock = dgram.createSocket((mode === 'send' && args[0].includes(':')) || (mode === 'resolve-send' && qtype === 'AAAA') ? 'udp6' : 'udp4')
await new Promise((r) => sock.bind(0, from, r))

if (mode === 'send') {
  const [addr, port, text, waitMs] = args
  out({ reply: await sendOnce(sock, addr, Number(port), text, Number(waitMs)) })
} else if (mode === 'resolve-send') {
  const [dnsAddr, name, port, text, waitMs] = args
  const dns = dgram.createSocket(dnsAddr.includes(':') ? 'udp6' : 'udp4')
  await new Promise((r) => dns.bind(0, from, r))
  const id = (Math.random() * 65536) | 0
  const answer = await new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), Number(waitMs))
    dns.on('message', (m) => {
      let p
      try {
        p = dnsPacket.decode(m)
      } catch {
        return
      }
      if (p.id !== id) return
      clearTimeout(timer)
      resolve(p)
    })
    dns.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: qtype, class: 'IN' }] }), 53, dnsAddr)
  })
  dns.close()
  if (answer === null) out({ rcode: null, address: null, reply: null })
  const address = answer.answers.find((a) => a.type === qtype)?.data ?? null
  if (address === null) out({ rcode: answer.rcode, address, reply: null })
  // Nothing awaited between the answer and this send.
  const reply = await sendOnce(sock, address, Number(port), text, Number(waitMs))
  out({ rcode: answer.rcode, address, reply })
} else {
  process.stderr.write(`udp-probe: unknown mode ${mode}\n`)
  process.exit(2)
}
