/**
 * egressd's configuration keys, once: each key's kind, default, bounds and meaning.
 * The loader validates and fills defaults from it, `unknown key` hints come from its
 * key lists, the section types in types.ts are inferred from it, and
 * docs/configuration.md is checked against it (test/config/schema.test.ts). Adding a
 * key means adding one line here (and the row the test then asks for in the docs).
 */
import { DEFAULT_PORTS } from '../policy/types.js'
import { DEFAULT_REPORT_PORTS } from './groups.js'
import { bool, cidrs, entries, enumOf, groups, hostPorts, include, int, name, optionalHostPort, ports, presets, section, text, upstreams } from './fields.js'

const MODES = ['enforce', 'report'] as const

export const dnsSchema = section({
  listen: hostPorts(['127.0.0.1:5353'], 'UDP and TCP listeners; IPv6 as "[::1]:5353"; the port is required'),
  upstreams: upstreams([], 'upstream resolvers, tried in order: "9.9.9.9", "[2620:fe::fe]" or "2620:fe::fe" (port 53), "ip:port", "[ipv6]:port"; ' +
    'DNS over TLS "tls://ip[:853][#name]" (certificate checked against name, else the address); DNS over HTTPS "https://host[:443][/dns-query]#ip" (ip: the bootstrap address of host); ' +
    'empty: the nameservers of /etc/resolv.conf; one of egressd\'s own listeners is an error (a resolver loop)'),
  upstream_ca_file: text('', 'PEM file of the CAs that sign tls:// and https:// upstream certificates, instead of the system store (relative to this file); empty: the system store'),
  block_response: enumOf(['nxdomain', 'refused'], 'nxdomain', 'answer to a blocked name (NODATA instead of NXDOMAIN when allowed names exist below it)'),
  rebind_protection: bool(true, 'an allowed name answering a private address gets SERVFAIL'),
  rebind_exempt: entries('allow', 'patterns (allow syntax) whose answers may hold private addresses'),
  clients: cidrs(['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'], 'source addresses served; others get REFUSED'),
  upstream_timeout_ms: int(2000, 50, 60_000, 'per try, per upstream; then the next upstream, SERVFAIL after all'),
  max_pending_upstream: int(4096, 1, 1_000_000, 'outstanding upstream queries; beyond it SERVFAIL at once'),
  max_tcp_connections: int(512, 1, 1_000_000, 'client TCP connections; beyond it new ones are closed'),
  tcp_idle_timeout_ms: int(10_000, 100, 600_000, 'a client TCP connection without a complete query for this long is closed'),
  cache: section({
    max_entries: int(100_000, 0, 100_000_000, 'cached answers at most'),
    max_bytes: int(32 * 1024 * 1024, 0, 2 ** 40, 'cached answer bytes at most (32 MiB), measured as the real bytes an entry holds (bench/RESULTS.md)'),
    min_ttl: int(0, 0, 86_400, 'TTLs below it are raised to it'),
    max_ttl: int(86_400, 0, 7 * 86_400, 'TTLs above it are lowered to it'),
    negative_max_ttl: int(3600, 0, 86_400, 'cap for negative answers (RFC 2308: SOA minimum, bounded)'),
  }),
  rate_limit: section({
    qps: int(200, 0, 10_000_000, 'token bucket per client address: refill per second; 0 turns it off'),
    burst: int(1000, 1, 10_000_000, 'token bucket size per client address'),
  }),
  max_udp_payload: int(1232, 512, 4096, 'EDNS UDP payload advertised and honoured at most (DNS Flag Day 2020); larger answers get TC over UDP'),
  cname_targets: enumOf(['follow_policy', 'allow_any'], 'follow_policy', 'follow_policy: every CNAME/DNAME target in an answer must be allowed for the client too, else the query is answered as blocked (EDE 15 naming the target), nothing reaches the firewall and the SNI proxy does not dial it (reason cname_blocked); allow_any: an allowed name may alias anything'),
  ech: enumOf(['strip', 'pass'], 'strip', 'strip: the ech parameter (Encrypted ClientHello) is removed from HTTPS/SVCB records in answers to allowed names, so clients send the real name in the SNI that the proxy judges (a record whose mandatory list names ech is removed, so is an RRSIG over a rewritten set; an HTTPS/SVCB record that breaks RFC 9460 wire rules gets SERVFAIL); pass: relayed unchanged (ECH clients then show the provider\'s public name to the SNI proxy)'),
  outside_clients: section({
    answer: enumOf(['refused', 'drop'], 'refused', 'sources outside dns.clients (possibly spoofed): REFUSED with EDE 18 and no text, rate-limited, or no answer at all'),
    refused_qps: int(10, 1, 100_000, 'REFUSED answers per second to all outside sources together; the rest are dropped'),
  }),
})

export const sniSchema = section({
  listen: hostPorts(['127.0.0.1:8443'], 'TLS listeners (the redirect target of the devices\' TCP 443)'),
  upstream_port: int(443, 1, 65535, 'port dialled on the resolved address'),
  on_block: enumOf(['reset', 'alert'], 'reset', 'a blocked ClientHello gets a TCP reset or a TLS alert'),
  allow_private_destinations: bool(false, 'whether an allowed name may be dialled at a private address'),
  max_client_hello_bytes: int(16_384, 512, 65_536, 'bound on the buffered ClientHello'),
  handshake_timeout_ms: int(10_000, 100, 300_000, 'time to deliver the whole ClientHello'),
  connect_timeout_ms: int(5_000, 100, 120_000, 'per upstream address attempt'),
  idle_timeout_ms: int(0, 0, 86_400_000, '0 is off: devices hold long-lived gRPC and MQTT streams'),
  max_connections: int(16_384, 1, 1_000_000, 'concurrent proxied connections; beyond it new ones are reset'),
  shutdown_grace_ms: int(5_000, 0, 600_000, 'on SIGTERM, how long spliced connections may finish before they are cut'),
})

export const metricsSchema = section({
  listen: optionalHostPort('127.0.0.1:9153', 'GET /metrics, /healthz, /readyz; null turns the listener off'),
  blocked_names_max: int(1000, 0, 1_000_000, 'names kept in egressd_blocked_total{name}; older ones fold into _other'),
  blocked_clients_max: int(256, 0, 100_000, 'client addresses kept in egressd_client_blocked_total{client}; older ones fold into _other'),
})

export const firewallSchema = section({
  nftables: section({
    enabled: bool(false, 'write allowed answers into nftables sets (needs CAP_NET_ADMIN and the nft tool)'),
    table: name('egressd', /^[A-Za-z][A-Za-z0-9_]{0,31}$/, 'a letter then letters, digits or _ (at most 32)', 'the inet table holding the allow sets'),
    grace_seconds: int(60, 0, 86_400, 'an element\'s timeout is the answer\'s TTL plus this'),
    scope: enumOf(['shared', 'device'], 'shared', 'shared: elements address . protocol . port open a destination for every device (sets allow4/allow6); ' +
      'device: elements client . address . protocol . port open it only for the device that asked (sets allow4_dev/allow6_dev); ' +
      'restart only; the gateway ruleset\'s EGRESSD_SCOPE define must match (docs/gateway.md)'),
    device_key: enumOf(['address', 'mac'], 'address', 'scope device: what identifies a device in its elements. address: the address it asked from (sets allow4_dev/allow6_dev; ' +
      'works across a router; an IPv4 device gets no element for an AAAA answer, nor the reverse); mac: its link-layer address from the kernel\'s neighbour table ' +
      '(sets allow4_mac/allow6_mac; devices must be on-link with the gateway; works across families and IPv6 privacy addresses); restart only; EGRESSD_SCOPE must match (docs/gateway.md)'),
    max_elements_per_device: int(1024, 1, 1_000_000, 'scope device: elements one device may hold; past it its oldest are deleted first ' +
      '(egressd_firewall_evicted_total{bound="device"}), the answer still leaves'),
    max_elements: int(65_536, 1, 10_000_000, 'scope device: elements of all devices together; past it the oldest element of the device holding the most is deleted ' +
      '(egressd_firewall_evicted_total{bound="total"}); about 510 bytes each: ~340 in egressd, ~170 in the kernel (docs/gateway.md)'),
  }),
})

export const logSchema = section({
  level: enumOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], 'info', 'pino log level'),
})

/**
 * An allow/deny/report/rebind_exempt item written as a mapping (a plain string is its
 * `name`), in the configuration, presets and included files alike (config/entries.ts).
 */
export const entrySchema = {
  name: name('', /^/, 'a name pattern', 'required: "api.example.com", "*.example.com", "time{1,2}.example.com", "{0..3}.pool.ntp.org"'),
  ports: ports(DEFAULT_PORTS, 'ports the firewall sink opens for the name'),
  public_suffix: bool(false, 'true accepts a wildcard at or above a public suffix ("*.github.io", "*.co.uk", "*.lan"), ' +
    'which is an error otherwise in every list but deny'),
} as const

const INCLUDE_DOC = 'files or globs (* and ? in the last path part) whose allow, deny, report and include lists are added; ' +
  'relative to the including file; a glob that matches nothing is fine, a missing named file is an error'

/** One item of `groups:`; `name` and `clients` are required (load.ts says so). */
export const groupSchema = {
  name: name('', /^[a-z0-9_-]{1,64}$/, '1-64 of a-z 0-9 _ -', 'required; becomes a metric label; "default" is reserved'),
  clients: cidrs([], 'required; the client addresses of the group (the first group containing a client decides)'),
  presets: presets('preset files whose entries the group allows'),
  allow: entries('allow', 'the group\'s allow entries'),
  deny: entries('deny', 'the group\'s deny entries'),
  mode: enumOf(MODES, 'enforce', 'report: the group\'s would-be blocks pass, counted as would_block'),
  report: entries('allow', 'names let through and counted as would_block'),
  report_ports: ports(DEFAULT_REPORT_PORTS, 'ports opened for a name let through by mode: report without a report entry'),
  include: include('files whose allow, deny and report entries the group adds, as the top-level include'),
} as const

export const uiSchema = section({
  enabled: bool(true, 'the status page and /api/* on the metrics listener (src/ui/README.md)'),
  token_file: text('', 'a file holding the bearer token (at least 16 characters; relative to this file); needed when the metrics listener is not loopback, else the page is off'),
  events_max: int(2000, 100, 100_000, 'decision events kept in memory for the page and /api/events'),
  clients_max: int(8, 1, 32, 'live event streams open at once; one more is answered 503'),
})

/** The whole file; the top level's presets/allow/deny/mode/report are the `default` group. */
export const configSchema = section({
  dns: dnsSchema,
  sni: sniSchema,
  metrics: metricsSchema,
  firewall: firewallSchema,
  log: logSchema,
  presets: presets('preset files whose entries are allowed: /etc/egressd/presets/NAME.yaml, else the shipped config/presets/NAME.yaml'),
  allow: entries('allow', 'names or {name, ports, public_suffix} mappings; ports default to [443/tcp]', entrySchema),
  deny: entries('deny', 'names blocked even where an allow entry matches'),
  mode: enumOf(MODES, 'enforce', 'report: would-be blocks pass, counted as would_block'),
  report: entries('allow', 'names let through and counted as would_block while trying a rule'),
  report_ports: ports(DEFAULT_REPORT_PORTS, 'ports opened for a name let through by mode: report without a report entry'),
  groups: groups(groupSchema, 'per-client policies, see docs/groups.md'),
  include: include(INCLUDE_DOC),
  ui: uiSchema,
})

/** A file named by `include:`: lists only (no listeners, presets or groups), and its own includes. */
export const includeFileSchema = section({
  allow: entries('allow', 'added after the including file\'s allow entries'),
  deny: entries('deny', 'added after the including file\'s deny entries'),
  report: entries('allow', 'added after the including file\'s report entries'),
  include: include(INCLUDE_DOC),
})

/** A preset file, config/presets/NAME.yaml: its allow and deny lists, and where they came from. */
export const presetFileSchema = section({
  description: text('', 'what the preset is for'),
  source: text('', 'the guide or document its names come from'),
  allow: entries('allow', 'names or {name, ports} mappings'),
  deny: entries('deny', 'names blocked even where an allow entry matches'),
})
