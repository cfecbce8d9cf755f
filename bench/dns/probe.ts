/**
 * One-query UDP client for readiness and answer checks outside dnsperf's loop: dnsperf
 * counts response codes but never looks at the records, so each scenario is also probed
 * here and the answer decoded in full.
 */
import { createSocket } from 'node:dgram'
import * as packet from 'dns-packet'

export interface ProbeAnswer {
  rcode: string
  id: number
  idMatches: boolean
  answers: { name: string; type: string; data: string }[]
}

export function probe(port: number, name: string, type: 'A' | 'AAAA' | 'TXT' = 'A', timeoutMs = 1000): Promise<ProbeAnswer | null> {
  const id = (Math.random() * 0xffff) | 0
  const query = packet.encode({ type: 'query', id, flags: packet.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] })
  const socket = createSocket('udp4')
  return new Promise((resolve) => {
    const done = (v: ProbeAnswer | null): void => {
      clearTimeout(timer)
      socket.close()
      resolve(v)
    }
    const timer = setTimeout(() => done(null), timeoutMs)
    socket.on('error', () => done(null))
    socket.on('message', (msg) => {
      // dns-packet's decoder sets rcode; its type definitions omit it.
      let decoded: packet.Packet & { rcode?: string }
      try {
        decoded = packet.decode(msg)
      } catch {
        done(null)
        return
      }
      done({
        rcode: decoded.rcode ?? 'NOERROR',
        id: decoded.id ?? -1,
        idMatches: decoded.id === id,
        answers: (decoded.answers ?? []).map((a) => ({
          name: a.name,
          type: a.type,
          data: 'data' in a ? String(a.data) : '',
        })),
      })
    })
    socket.send(query, port, '127.0.0.1')
  })
}

/** Polls until the server answers anything, or gives up after `timeoutMs`. */
export async function waitAnswering(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await probe(port, 'ready-probe.invalid', 'A', 200)) return true
  }
  return false
}

/**
 * Describes what is wrong with an answer, or returns null when it is the expected one:
 * NXDOMAIN with no records for blocked names, NOERROR with exactly `expectA` for allowed.
 */
export function checkAnswer(a: ProbeAnswer | null, expect: 'NXDOMAIN' | { a: string }, name: string): string | null {
  if (!a) return `${name}: no answer`
  if (!a.idMatches) return `${name}: answer id ${a.id} does not match the query`
  if (expect === 'NXDOMAIN') {
    if (a.rcode !== 'NXDOMAIN') return `${name}: expected NXDOMAIN, got ${a.rcode}`
    if (a.answers.length) return `${name}: NXDOMAIN with ${a.answers.length} answers`
    return null
  }
  if (a.rcode !== 'NOERROR') return `${name}: expected NOERROR, got ${a.rcode}`
  const rec = a.answers.find((r) => r.type === 'A')
  if (!rec) return `${name}: NOERROR without an A record`
  if (rec.data !== expect.a) return `${name}: A ${rec.data}, expected ${expect.a}`
  return null
}
