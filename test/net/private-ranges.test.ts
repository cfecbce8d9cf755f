import t from 'tap'
import { parseIpInto } from '../../src/net/address.js'
import { isPrivateAddress, isPrivateIp } from '../../src/net/private-ranges.js'

const PRIVATE = [
  '0.0.0.0', '0.1.2.3', '10.0.0.1', '10.255.255.255', '100.64.0.1', '100.127.255.255', '127.0.0.1', '127.255.0.1',
  '169.254.169.254', '172.16.0.1', '172.31.255.255', '192.168.1.1', '224.0.0.1', '239.1.1.1', '240.0.0.1', '255.255.255.255',
  '::', '::1', 'fc00::1', 'fd12:3456::1', 'fe80::1', 'febf::1', 'ff02::1',
  '::ffff:127.0.0.1', '::ffff:10.1.2.3', '::ffff:7f00:1', '::127.0.0.1', '64:ff9b::10.0.0.1', '64:ff9b::a00:1', '64:ff9b:1::1',
  '2002:c0a8:0101::1', '2002:7f00:1::', '::2:1',
]
const PUBLIC = [
  '1.1.1.1', '8.8.8.8', '9.255.255.255', '11.0.0.0', '100.63.255.255', '100.128.0.0', '126.255.255.255', '128.0.0.0',
  '169.253.0.1', '172.15.255.255', '172.32.0.0', '192.167.1.1', '192.169.0.1', '198.18.0.1', '203.0.113.1', '223.255.255.255',
  '2001:db8::1', '2606:4700::1111', '::1:0:0:1', 'fe00::1', 'fec0::1', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:0808:0808::1',
]

t.test('the documented private ranges, string and byte forms agree', async (t) => {
  const buf = new Uint8Array(16)
  for (const ip of PRIVATE) {
    t.ok(isPrivateIp(ip), `${ip} private`)
    const n = parseIpInto(ip, buf)
    t.not(n, 0, `${ip} parses`)
    t.ok(isPrivateAddress(buf, 0, n as 4 | 16))
  }
  for (const ip of PUBLIC) {
    t.notOk(isPrivateIp(ip), `${ip} public`)
  }
})

t.test('parseIpInto rejects non-addresses; isPrivateIp fails closed', async (t) => {
  const buf = new Uint8Array(16)
  for (const bad of ['', 'example.com', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1::2::3', ':1', '1:2:3:4:5:6:7:8:9', 'g::1', '1:2:3:4:5:6:7', '12345::']) {
    t.equal(parseIpInto(bad, buf), 0, JSON.stringify(bad))
    t.ok(isPrivateIp(bad))
  }
  t.equal(parseIpInto('fe80::1%eth0', buf), 16, 'zone ignored')
  t.equal(parseIpInto('1:2:3:4:5:6:7::', buf), 16)
  t.same([...buf.subarray(0, 4)], [0, 1, 0, 2])
})
