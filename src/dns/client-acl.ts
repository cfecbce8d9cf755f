import type { Cidr } from '../net/cidr.js'
import { CidrTable } from '../net/cidr-table.js'

/** `dns.clients` for a per-datagram check; text that is not an address is refused. */
export class ClientAcl {
  private readonly table: CidrTable

  constructor(cidrs: readonly Cidr[]) {
    this.table = new CidrTable(cidrs.map((cidr) => ({ cidr, value: 0 })))
  }

  allows(address: string): boolean {
    return this.table.lookup(address) >= 0
  }
}
