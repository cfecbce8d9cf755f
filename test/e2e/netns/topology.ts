/**
 * The three-namespace gateway of the end-to-end test, after test/firewall/template.test.ts:
 *
 *   dev 192.168.77.2/24 ─eth0──lan0─ gw 192.168.77.1 | 198.18.0.1/24 ─wan0──eth0─ world 198.18.0.2/24
 *       fd77::2/64                      fd77::1        | 2001:db8:0:1::1/64          2001:db8:0:1::2/64
 *                                                                                 + 198.18.1.x/24
 *                                                                                 + 2001:db8:1::x/64
 *
 * The device side is a ULA (as on most home and office segments), the world is in the
 * IPv6 documentation prefix, which egressd does not treat as private. IPv6 addresses
 * are added with `nodad`: duplicate address detection would hold them tentative (and
 * unusable) for the first second or two.
 * Every link is made inside the namespaces (`ip netns exec GW ip link add lan0 … peer
 * name eth0 netns DEV`), so no interface name can clash with the host's or with another
 * suite's; deleting the namespaces removes the veths with them.
 */
import { access, mkdir, rm, writeFile } from 'node:fs/promises'
import { execFileP, probeNetns } from '../../firewall/helpers.js'
import { CLI } from './process.js'

export { execFileP }

export interface Namespaces {
  readonly dev: string
  readonly gw: string
  readonly world: string
}

export const DEVICE = '192.168.77.2'
export const GATEWAY_LAN = '192.168.77.1'
export const GATEWAY_WAN = '198.18.0.1'
export const WORLD = '198.18.0.2'
export const DEVICE6 = 'fd77::2'
export const GATEWAY_LAN6 = 'fd77::1'
export const GATEWAY_WAN6 = '2001:db8:0:1::1'
export const WORLD6 = '2001:db8:0:1::2'

/** Why the end-to-end test cannot run here, or null. */
export async function missingPrerequisite(): Promise<string | null> {
  for (const tool of ['dig', 'curl', 'openssl', 'timeout', 'sysctl']) {
    try {
      await execFileP('sh', ['-c', `command -v ${tool}`])
    } catch {
      return `no ${tool} binary (.ci/run installs dnsutils, curl, openssl)`
    }
  }
  try {
    await access(CLI)
  } catch {
    return `${CLI} is missing: run npm run build (npm test does)`
  }
  // Root, ip, nft, and a namespace that can be made and can run nft.
  const probe = await probeNetns()
  return probe.ok ? null : probe.reason
}

export function inNs(ns: string, ...cmd: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP('ip', ['netns', 'exec', ns, ...cmd], { timeout: 20_000 })
}

/** Like inNs, but resolves with the exit code and output instead of rejecting on failure. */
export async function runInNs(ns: string, cmd: string[], timeoutMs = 15_000): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP('ip', ['netns', 'exec', ns, ...cmd], { timeout: timeoutMs })
    return { code: 0, stdout, stderr }
  } catch (e) {
    const x = e as { code?: number | string; stdout?: string; stderr?: string }
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? String(e) }
  }
}

/**
 * Makes the namespaces; `cleanup` (register it in t.teardown before calling `build`)
 * deletes whatever was made, including /etc/netns/DEV, even when `build` failed halfway.
 */
export class Topology {
  readonly ns: Namespaces
  private readonly made: string[] = []
  private etcDir: string | null = null

  constructor(tag: string | number) {
    this.ns = { dev: `egressd-e2e-dev-${tag}`, gw: `egressd-e2e-gw-${tag}`, world: `egressd-e2e-world-${tag}` }
  }

  /**
   * Removes what an earlier run left when it was killed before its teardown: the
   * namespaces of this suite whose test process is gone, the processes still running in
   * exactly those namespaces (its egressd), and their /etc/netns entries.
   */
  static async reapStale(): Promise<string[]> {
    const { stdout } = await execFileP('ip', ['netns', 'list'])
    const reaped: string[] = []
    for (const m of stdout.matchAll(/^(egressd-e2e-(?:dev|devb|gw|world)-(\d+))\b/gm)) {
      const [, name, pid] = m as unknown as [string, string, string]
      if (pidAlive(Number(pid))) continue
      const pids = await execFileP('ip', ['netns', 'pids', name]).then((r) => r.stdout.split('\n').filter(Boolean).map(Number), () => [])
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL')
        } catch {
          // Already gone.
        }
      }
      await execFileP('ip', ['netns', 'del', name]).catch(() => {})
      await rm(`/etc/netns/${name}`, { recursive: true, force: true })
      reaped.push(name)
    }
    return reaped
  }

  /**
   * `worldAddresses`: extra addresses of the world's servers, IPv4 in /24s reached via
   * WORLD, IPv6 in /64s reached via WORLD6.
   */
  async build(worldAddresses: readonly string[]): Promise<void> {
    const { dev, gw, world } = this.ns
    for (const ns of [gw, dev, world]) {
      await execFileP('ip', ['netns', 'add', ns])
      this.made.push(ns)
    }
    await inNs(gw, 'ip', 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', dev)
    await inNs(gw, 'ip', 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', world)
    await inNs(gw, 'ip', 'addr', 'add', `${GATEWAY_LAN}/24`, 'dev', 'lan0')
    await inNs(gw, 'ip', 'addr', 'add', `${GATEWAY_WAN}/24`, 'dev', 'wan0')
    await inNs(dev, 'ip', 'addr', 'add', `${DEVICE}/24`, 'dev', 'eth0')
    await inNs(world, 'ip', 'addr', 'add', `${WORLD}/24`, 'dev', 'eth0')
    await inNs(gw, 'ip', '-6', 'addr', 'add', `${GATEWAY_LAN6}/64`, 'dev', 'lan0', 'nodad')
    await inNs(gw, 'ip', '-6', 'addr', 'add', `${GATEWAY_WAN6}/64`, 'dev', 'wan0', 'nodad')
    await inNs(dev, 'ip', '-6', 'addr', 'add', `${DEVICE6}/64`, 'dev', 'eth0', 'nodad')
    await inNs(world, 'ip', '-6', 'addr', 'add', `${WORLD6}/64`, 'dev', 'eth0', 'nodad')
    for (const a of worldAddresses) {
      if (a.includes(':')) await inNs(world, 'ip', '-6', 'addr', 'add', `${a}/64`, 'dev', 'eth0', 'nodad')
      else await inNs(world, 'ip', 'addr', 'add', `${a}/24`, 'dev', 'eth0')
    }
    for (const [ns, ifs] of [[gw, ['lo', 'lan0', 'wan0']], [dev, ['lo', 'eth0']], [world, ['lo', 'eth0']]] as const) {
      for (const i of ifs) await inNs(ns, 'ip', 'link', 'set', i, 'up')
    }
    await inNs(dev, 'ip', 'route', 'add', '198.18.0.0/15', 'via', GATEWAY_LAN)
    await inNs(dev, 'ip', '-6', 'route', 'add', '2001:db8::/32', 'via', GATEWAY_LAN6)
    const v4 = worldAddresses.filter((a) => !a.includes(':'))
    const v6 = worldAddresses.filter((a) => a.includes(':'))
    for (const a of new Set(v4.map((x) => x.replace(/\.\d+$/, '.0/24')))) await inNs(gw, 'ip', 'route', 'add', a, 'via', WORLD)
    for (const a of new Set(v6.map((x) => x.replace(/::[0-9a-f]+$/, '::/64')))) await inNs(gw, 'ip', '-6', 'route', 'add', a, 'via', WORLD6)
    await inNs(gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=1')
    await inNs(gw, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1')
  }

  /**
   * A second device with a link-layer address of its own, in namespace `devb`: a
   * macvlan (bridge mode) on the first device's eth0, moved into its own namespace, so
   * its frames reach the gateway's lan0 with another source MAC, as a second device on
   * a switch would. Call after `build`; `cleanup` removes it.
   */
  async addDevice(v4: string, v6: string): Promise<{ ns: string; mac: string }> {
    const ns = this.ns.dev.replace('-dev-', '-devb-')
    await execFileP('ip', ['netns', 'add', ns])
    this.made.push(ns)
    await inNs(this.ns.dev, 'ip', 'link', 'add', 'link', 'eth0', 'name', 'mv0', 'type', 'macvlan', 'mode', 'bridge')
    await inNs(this.ns.dev, 'ip', 'link', 'set', 'mv0', 'netns', ns)
    await inNs(ns, 'ip', 'link', 'set', 'mv0', 'name', 'eth0')
    await inNs(ns, 'ip', 'addr', 'add', `${v4}/24`, 'dev', 'eth0')
    await inNs(ns, 'ip', '-6', 'addr', 'add', `${v6}/64`, 'dev', 'eth0', 'nodad')
    for (const i of ['lo', 'eth0']) await inNs(ns, 'ip', 'link', 'set', i, 'up')
    await inNs(ns, 'ip', 'route', 'add', '198.18.0.0/15', 'via', GATEWAY_LAN)
    await inNs(ns, 'ip', '-6', 'route', 'add', '2001:db8::/32', 'via', GATEWAY_LAN6)
    return { ns, mac: await macOf(ns, 'eth0') }
  }

  /**
   * The device's /etc/resolv.conf names the gateway: `ip netns exec` bind-mounts
   * /etc/netns/NS/resolv.conf over it, so curl resolves through egressd as a device
   * would. False when /etc is not writable (the caller then resolves with dig).
   */
  async deviceResolvConf(nameserver: string): Promise<boolean> {
    const dir = `/etc/netns/${this.ns.dev}`
    try {
      await mkdir(dir, { recursive: true })
      this.etcDir = dir
      await writeFile(`${dir}/resolv.conf`, `nameserver ${nameserver}\noptions timeout:2 attempts:1\n`)
      return true
    } catch {
      return false
    }
  }

  async cleanup(): Promise<void> {
    for (const ns of this.made.splice(0).reverse()) await execFileP('ip', ['netns', 'del', ns]).catch(() => {})
    if (this.etcDir) {
      await rm(this.etcDir, { recursive: true, force: true })
      this.etcDir = null
      // Leave /etc/netns as we found it: remove it only if nothing else is in it.
      await execFileP('rmdir', ['/etc/netns']).catch(() => {})
    }
  }
}

/** An interface's link-layer address, as nft and the neighbour table print it. */
export async function macOf(ns: string, ifname: string): Promise<string> {
  const { stdout } = await inNs(ns, 'ip', '-j', 'link', 'show', ifname)
  return (JSON.parse(stdout) as Array<{ address: string }>)[0]!.address
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}
