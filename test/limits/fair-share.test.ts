import t from 'tap'
import { FairShare } from '../../src/fair-share.js'

/** Lets `client` take units until refused or `want` are held; returns how many it holds. */
function fill(s: FairShare, client: string, want: number): number {
  while (s.holding(client) < want && s.take(client));
  return s.holding(client)
}

t.test('one client alone holds at most half the budget', async (t) => {
  const s = new FairShare(4096)
  t.equal(fill(s, 'a', 10_000), 2048)
  t.equal(s.refusal('a'), 'share')
  t.equal(s.refusal('b'), null, 'another client is served')
  // Two holders: b may go up to ⌊4096/3⌋ while the total stays below 4096 − 1365.
  t.equal(fill(s, 'b', 10_000), 4096 - 1365 - 2048)
})

t.test('thirty saturating clients leave a share free for the thirty-first', async (t) => {
  const s = new FairShare(4096)
  for (let i = 0; i < 30; i++) fill(s, `10.0.0.${i}`, 400)
  t.ok(s.used <= 4096 - Math.floor(4096 / 31), `30 clients hold ${s.used}`)
  t.ok(fill(s, 'victim', 5) >= 1, `the newcomer is served at once (${s.holding('victim')} units)`)
  // Within one upstream timeout every exchange of theirs ends and they retry at once;
  // each is now held to ⌊4096/32⌋ = 128, so what they held beyond flows to the newcomer.
  for (let i = 0; i < 30; i++) {
    const c = `10.0.0.${i}`
    while (s.holding(c) > 0) s.release(c)
    fill(s, c, 1000)
    fill(s, 'victim', 100)
  }
  t.equal(s.holding('victim'), 100, 'after the turnover the newcomer holds what it asked for')
  t.ok(s.take('late'), 'a further newcomer still finds a unit')
})

t.test('a small budget: every client still gets one, the total never exceeds the budget', async (t) => {
  const s = new FairShare(4)
  t.equal(fill(s, 'a', 10), 2)
  t.ok(s.take('b'))
  t.ok(s.take('c'))
  t.equal(s.used, 4)
  t.equal(s.refusal('d'), 'budget')
  s.release('a')
  t.ok(s.take('d'), 'a released unit goes to the client holding none')
  t.equal(s.used, 4)
})

t.test('release forgets clients holding nothing; the largest holder is found', async (t) => {
  const s = new FairShare(100)
  fill(s, 'a', 3)
  fill(s, 'b', 5)
  t.equal(s.largestHolder(), 'b')
  for (let i = 0; i < 5; i++) s.release('b')
  t.equal(s.holders, 1)
  s.release('zzz')
  t.equal(s.used, 3, 'releasing for a client holding nothing changes nothing')
  s.budget = 2
  t.equal(s.refusal('c'), 'budget', 'a lower budget (reload) applies to new units')
})
