import t from 'tap'
import { Registry } from 'prom-client'
import { FastCounter } from '../../src/metrics/fast-counter.js'
t.test('fast counter exposes counter type', async (t) => {
  const r = new Registry()
  const c = new FastCounter(r, 'egressd_x_total', 'x', 'verdict', ['a', 'b'] as const)
  c.inc(c.slot('b'), 3)
  const text = await r.metrics()
  t.match(text, /# TYPE egressd_x_total counter/)
  t.match(text, /egressd_x_total\{verdict="b"\} 3/)
  t.match(text, /egressd_x_total\{verdict="a"\} 0/)
})

t.test('an unknown label value is a caller bug: InvalidArgumentError', async (t) => {
  const c = new FastCounter(new Registry(), 'egressd_y_total', 'y', 'verdict', ['a', 'b'] as const)
  t.throws(() => c.slot('c' as 'a'), { name: 'InvalidArgumentError', code: 'EINVALIDARG', message: 'unknown label value c' })
})
