/**
 * What `egressd suggest -c FILE` would propose from the events in memory: the same
 * observe → collapse → render steps (src/suggest), so the same public-suffix safety
 * (never `*.com`, `*.co.uk`, `*.github.io`), the same threshold (5 siblings) and the
 * running configuration's already-allowed names left out. Pure.
 */
import type { UiView } from './view.js'
import { Observations } from '../suggest/observe.js'
import { render } from '../suggest/render.js'
import type { RingEvent } from './event-ring.js'

/** `egressd suggest`'s default --threshold. */
export const THRESHOLD = 5

export function proposalYaml(events: readonly RingEvent[], compiled: UiView): string {
  const obs = new Observations()
  for (const e of events) {
    obs.lines++
    obs.addEvent(e, new Date(e.time).toISOString())
  }
  return render(obs, {
    threshold: THRESHOLD,
    input: `the status page's memory (the newest ${events.length} decision events)`,
    config: { file: compiled.config.file, groups: compiled.groups },
  })
}
