/** The shipped gateway ruleset with its defines set for a test topology, and its counters. */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { inNs } from './topology.js'

export const TEMPLATE = fileURLToPath(new URL('../../../config/nftables/egressd.nft', import.meta.url))

/**
 * The template with each `define NAME = …` line replaced, as an operator edits it.
 * Throws if a define is missing, so a renamed define fails the test instead of
 * silently loading the template's defaults.
 */
export function templateWithDefines(defines: Record<string, string>): string {
  let text = readFileSync(TEMPLATE, 'utf8')
  for (const [name, value] of Object.entries(defines)) {
    const re = new RegExp(`^define ${name} = .*$`, 'm')
    if (!re.test(text)) throw new Error(`${TEMPLATE} has no "define ${name} = …" line`)
    text = text.replace(re, `define ${name} = ${value}`)
  }
  return text
}

/** Packets counted by a named counter of `table inet TABLE` in a namespace. */
export async function nftCounter(ns: string, table: string, name: string): Promise<number> {
  const { stdout } = await inNs(ns, 'nft', '-j', 'list', 'counter', 'inet', table, name)
  const doc = JSON.parse(stdout) as { nftables: Array<{ counter?: { packets: number } }> }
  return doc.nftables.find((o) => o.counter)!.counter!.packets
}

/**
 * Polls a counter until it reaches `want` (packets cross the veths in softirq, not in
 * the sender's system call), bounded by `timeoutMs`; returns the last value read, so the
 * caller's assertion reports what was seen.
 */
export async function awaitCounter(ns: string, table: string, name: string, want: number, timeoutMs = 3000): Promise<number> {
  const end = Date.now() + timeoutMs
  let v = await nftCounter(ns, table, name)
  while (v < want && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20))
    v = await nftCounter(ns, table, name)
  }
  return v
}
