import { EgressdError } from '../errors.js'
import type { UpstreamError } from './metrics.js'

/** One failed try; `reason` is the `egressd_dns_upstream_errors_total` label. */
export class UpstreamFailure extends EgressdError {
  constructor(
    readonly reason: UpstreamError,
    message: string,
  ) {
    super(reason === 'timeout' ? 'ETIMEOUT' : 'EUPSTREAM', message)
  }
}
