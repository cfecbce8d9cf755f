import t from 'tap'
import { ClientAcl } from '../../src/dns/client-acl.js'
import { cidr } from './helpers.js'

t.test('ClientAcl', async (t) => {
  const acl = new ClientAcl(['127.0.0.1/32', '10.0.0.0/8', 'fd00::/8', '::1/128'].map(cidr))
  t.ok(acl.allows('127.0.0.1'))
  t.notOk(acl.allows('127.0.0.2'))
  t.ok(acl.allows('10.200.3.4'))
  t.ok(acl.allows('::ffff:10.1.1.1'), 'IPv4-mapped judged as IPv4')
  t.ok(acl.allows('fd12::1'))
  t.notOk(acl.allows('fe80::1'))
  t.ok(acl.allows('::1'))
  t.notOk(acl.allows('not-an-ip'))
  t.ok(new ClientAcl([cidr('0.0.0.0/0')]).allows('8.8.8.8'))
  t.notOk(new ClientAcl([]).allows('127.0.0.1'))
})
