import { Counter, Gauge, type Registry } from 'prom-client'

/** Metrics that belong to the daemon as a whole: policy size and reloads. */
export function daemonMetrics(registry: Registry) {
  const reloads = new Counter({ name: 'egressd_config_reloads_total', help: 'Configuration reloads by result (success, failure).', labelNames: ['result'], registers: [registry] })
  // Both series exist from the start at 0, so increase() sees the first failure.
  reloads.inc({ result: 'success' }, 0)
  reloads.inc({ result: 'failure' }, 0)
  return {
    reloads,
    lastReloadSuccessful: new Gauge({ name: 'egressd_config_last_reload_successful', help: '1 if the last configuration load (start or reload) succeeded, 0 if it failed and the previous configuration is still running.', registers: [registry] }),
    policyRules: new Gauge({ name: 'egressd_policy_rules', help: 'Expanded allow and deny rules in the running policy.', registers: [registry] }),
    lastReload: new Gauge({ name: 'egressd_config_last_reload_success_timestamp_seconds', help: 'Unix time of the last successful configuration load.', registers: [registry] }),
    info: new Gauge({ name: 'egressd_config_info', help: 'Always 1; labels identify the running configuration (sha256 prefix) and version.', labelNames: ['hash', 'version'], registers: [registry] }),
  }
}
