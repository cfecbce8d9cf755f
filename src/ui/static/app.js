// egressd status page. Plain browser JavaScript, no framework, no build step.
// Every string that came from the network (names, SNI, reasons, addresses, groups) is
// put into the DOM as text (textContent / createTextNode), never parsed as markup.
'use strict'

const MAX_ROWS = 500 // rows drawn at once; the rest stay in memory for filters and tops
const TOKEN_KEY = 'egressd-token'

const ui = {
  events: [], // newest last, at most state.limits.eventsMax
  eventsMax: 2000,
  lastSeq: 0,
  state: null,
  samples: [],
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  stream: null,
  retry: null,
  proposalDirty: true,
  proposalTimer: null,
}

const $ = (id) => document.getElementById(id)

function el(tag, opts, ...children) {
  const e = document.createElement(tag)
  if (opts) {
    if (opts.cls) e.className = opts.cls
    if (opts.text !== undefined) e.textContent = String(opts.text)
    if (opts.title) e.title = String(opts.title)
    if (opts.label) e.dataset.label = opts.label
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c)
  return e
}

function headers() {
  return ui.token ? { authorization: 'Bearer ' + ui.token } : {}
}

async function api(path) {
  const res = await fetch(path, { headers: headers(), cache: 'no-store' })
  if (res.status === 401) throw Object.assign(new Error('token needed'), { status: 401 })
  if (!res.ok) throw new Error(path + ': HTTP ' + res.status + ' ' + (await res.text()))
  return res
}

// ---- start, token ---------------------------------------------------------------

function takeTokenFromFragment() {
  // `#token=…` in the address: read once, kept for this tab only, removed from the bar.
  const m = /^#token=(.+)$/.exec(location.hash)
  if (m) {
    ui.token = decodeURIComponent(m[1])
    sessionStorage.setItem(TOKEN_KEY, ui.token)
    history.replaceState(null, '', location.pathname + location.search)
  }
}

function askToken(message) {
  $('main').hidden = true
  $('token-form').hidden = false
  const err = $('token-error')
  err.hidden = !message
  err.textContent = message || ''
  $('summary').textContent = 'token needed'
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  ui.token = $('token').value.trim()
  sessionStorage.setItem(TOKEN_KEY, ui.token)
  start()
})

async function start() {
  try {
    const state = await (await api('/api/state')).json()
    const ev = await (await api('/api/events')).json()
    $('token-form').hidden = true
    $('main').hidden = false
    ui.eventsMax = state.limits.eventsMax
    ui.events = ev.events
    ui.lastSeq = ev.lastSeq
    applyState(state)
    renderEvents(true)
    renderTops()
    loadProposal()
    connect()
  } catch (e) {
    if (e.status === 401) askToken(ui.token ? 'That token was not accepted.' : '')
    else {
      $('summary').textContent = String(e.message)
      setTimeout(start, 5000)
    }
  }
}

// ---- live stream (fetch, so the token can travel in a header) ---------------------

function setLive(on, text) {
  const b = $('live')
  b.className = 'badge ' + (on ? 'on' : 'off')
  b.textContent = text
}

async function connect() {
  clearTimeout(ui.retry)
  const ctrl = new AbortController()
  ui.stream = ctrl
  try {
    const res = await fetch('/api/stream?since=' + ui.lastSeq, { headers: headers(), signal: ctrl.signal, cache: 'no-store' })
    if (res.status === 401) return askToken('The token is no longer accepted.')
    if (!res.ok || !res.body) throw new Error('HTTP ' + res.status)
    setLive(true, 'live')
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
    let buf = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buf += value
      let cut
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        onMessage(buf.slice(0, cut))
        buf = buf.slice(cut + 2)
      }
    }
  } catch (e) {
    if (ctrl.signal.aborted) return
  }
  setLive(false, 'reconnecting…')
  ui.retry = setTimeout(connect, 3000)
}

function onMessage(block) {
  let event = 'message'
  let data = ''
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7)
    else if (line.startsWith('data: ')) data += line.slice(6)
  }
  if (event === 'decision') addEvent(JSON.parse(data))
  else if (event === 'sample') {
    ui.samples.push(JSON.parse(data))
    if (ui.samples.length > (ui.state ? ui.state.limits.samplesKept : 180)) ui.samples.shift()
    renderCharts()
  } else if (event === 'state') refreshState()
}

let pendingRender = null
function addEvent(e) {
  if (e.seq <= ui.lastSeq) return
  ui.lastSeq = e.seq
  ui.events.push(e)
  if (ui.events.length > ui.eventsMax) ui.events.splice(0, ui.events.length - ui.eventsMax)
  ui.proposalDirty = true
  // A burst of events is drawn once per animation frame.
  if (pendingRender === null) {
    pendingRender = requestAnimationFrame(() => {
      pendingRender = null
      renderEvents(false)
      renderTops()
    })
  }
}

async function refreshState() {
  try {
    applyState(await (await api('/api/state')).json())
  } catch (e) {
    /* the stream's reconnect reports trouble */
  }
}

// ---- blocked attempts -----------------------------------------------------------

const filters = { device: '', group: '', proto: '', name: '' }
for (const [id, key] of [['f-device', 'device'], ['f-group', 'group'], ['f-proto', 'proto'], ['f-name', 'name']]) {
  $(id).addEventListener('input', () => {
    filters[key] = $(id).value
    renderEvents(true)
  })
}

function matches(e) {
  return (!filters.device || e.client === filters.device) &&
    (!filters.group || e.group === filters.group) &&
    (!filters.proto || e.protocol === filters.proto) &&
    (!filters.name || (e.name || '').toLowerCase().includes(filters.name.toLowerCase()))
}

function syncOptions(select, values) {
  const have = new Set([...select.options].map((o) => o.value))
  for (const v of [...values].sort()) {
    if (v && !have.has(v)) select.append(el('option', { text: v }))
  }
}

function timeText(ms) {
  const d = new Date(ms)
  return d.toLocaleTimeString([], { hour12: false })
}

function ruleOrReason(e) {
  if (e.verdict === 'would_block') return 'would block: ' + (e.reason || '') + (e.report_rule ? ' (report ' + e.report_rule + ')' : '')
  if (e.reason === 'denied' && e.rule) return 'deny ' + e.rule
  const parts = []
  if (e.reason) parts.push(e.reason)
  if (e.rule) parts.push(e.rule)
  return parts.join(' · ')
}

function row(e, fresh) {
  const name = e.name === null ? '(no name)' : e.name
  const tr = el('tr', { cls: fresh ? 'event fresh' : 'event' },
    el('td', { text: timeText(e.time), title: new Date(e.time).toISOString(), label: 'Time' }),
    el('td', { text: e.client || '?', label: 'Device' }),
    el('td', { text: e.group, label: 'Group' }),
    el('td', { text: e.protocol === 'dns' ? 'DNS' + (e.type ? ' ' + e.type : '') : 'TLS' + (e.ech ? ' (ECH)' : ''), label: 'Protocol' }),
    el('td', { cls: 'name', text: name, label: 'Name' }),
    el('td', { cls: 'v-' + e.verdict, text: e.verdict.replace('_', ' '), label: 'Verdict' }),
    el('td', { text: ruleOrReason(e), label: 'Rule or reason' }),
  )
  tr.dataset.seq = String(e.seq)
  tr.dataset.protocol = e.protocol
  return tr
}

let drawnSeq = 0
function renderEvents(full) {
  const body = $('events').tBodies[0]
  syncOptions($('f-device'), new Set(ui.events.map((e) => e.client)))
  syncOptions($('f-group'), new Set(ui.events.map((e) => e.group)))
  if (full) {
    const rows = []
    for (let i = ui.events.length - 1; i >= 0 && rows.length < MAX_ROWS; i--) {
      if (matches(ui.events[i])) rows.push(row(ui.events[i], false))
    }
    body.replaceChildren(...rows)
  } else {
    const fresh = []
    for (let i = ui.events.length - 1; i >= 0 && ui.events[i].seq > drawnSeq; i--) {
      if (matches(ui.events[i])) fresh.push(row(ui.events[i], true))
    }
    body.prepend(...fresh)
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove()
  }
  drawnSeq = ui.lastSeq
  const shown = [...ui.events].filter(matches).length
  $('shown').textContent = shown + ' of ' + ui.events.length + ' in memory' + (shown > MAX_ROWS ? ' (newest ' + MAX_ROWS + ' drawn)' : '')
  $('no-events').hidden = ui.events.length > 0
}

function renderTops() {
  const count = (key) => {
    const m = new Map()
    for (const e of ui.events) {
      const k = key(e)
      if (k !== null && k !== undefined) m.set(k, (m.get(k) || 0) + 1)
    }
    return [...m].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 10)
  }
  const fill = (id, list) => {
    $(id).replaceChildren(...list.map(([k, n]) => el('li', null, el('span', { text: k }), el('span', { cls: 'count', text: '×' + n }))))
  }
  fill('top-names', count((e) => e.name))
  fill('top-devices', count((e) => e.client))
}

// ---- proposal -------------------------------------------------------------------

async function loadProposal() {
  ui.proposalDirty = false
  try {
    const res = await api('/api/proposal')
    // The server recomputes it at most every 5 s: behind our newest event, ask again.
    if (Number(res.headers.get('x-egressd-seq')) < ui.lastSeq) ui.proposalDirty = true
    $('proposal').textContent = await res.text()
  } catch (e) {
    $('proposal').textContent = '# could not load: ' + e.message
  }
}
// New events make the proposal stale; it is fetched again at most every 3 s.
ui.proposalTimer = setInterval(() => {
  if (ui.proposalDirty && !$('main').hidden) loadProposal()
}, 3000)
$('refresh').addEventListener('click', loadProposal)
$('copy').addEventListener('click', async () => {
  const text = $('proposal').textContent
  try {
    await navigator.clipboard.writeText(text)
    $('copied').textContent = 'copied'
  } catch (e) {
    // Clipboard needs a secure context (https or localhost): select the text instead.
    const range = document.createRange()
    range.selectNodeContents($('proposal'))
    const sel = getSelection()
    sel.removeAllRanges()
    sel.addRange(range)
    $('copied').textContent = 'selected: press Ctrl+C'
  }
  setTimeout(() => ($('copied').textContent = ''), 3000)
})

// ---- state ----------------------------------------------------------------------

function duration(s) {
  const d = Math.floor(s / 86400)
  const h = Math.floor((s % 86400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's'
}

function applyState(s) {
  ui.state = s
  ui.eventsMax = s.limits.eventsMax
  ui.samples = s.traffic.slice()
  const c = s.config
  $('summary').textContent = 'v' + s.version + ' · up ' + duration(s.uptimeSeconds) + ' · ' + c.rules + ' rules · mode ' + c.mode + ' · config ' + c.hash
  const list = $('state-list')
  const rows = []
  const add = (k, v) => rows.push(el('dt', { text: k }), v instanceof Node ? el('dd', null, v) : el('dd', { text: v }))
  const ul = (items) => el('ul', null, ...items.map((t) => el('li', { text: t })))
  add('Version', s.version)
  add('Up since', new Date(s.startedAt).toLocaleString() + ' (' + duration(s.uptimeSeconds) + ')')
  add('Configuration', c.file)
  add('Hash', c.hash)
  add('Rules', String(c.rules))
  add('Mode', c.mode)
  add('Groups', ul(c.groups.map((g) => g.name + ' — ' + g.mode + ', ' + g.rules + ' rules' + (g.clients.length ? ', clients ' + g.clients.join(' ') : ''))))
  const r = s.reload
  add('Last load', new Date(r.at).toLocaleString() + (r.ok ? ' — ok' : ' — FAILED, the previous configuration still runs'))
  if (!r.ok) add('Reload errors', ul(r.errors))
  add('Listeners', ul([
    'DNS ' + (s.listeners.dns.join(' ') || 'none'),
    'TLS (SNI) ' + (s.listeners.sni.join(' ') || 'none'),
    'metrics and this page ' + (s.listeners.metrics || 'none'),
  ]))
  add('Upstreams', s.upstreams.join(' '))
  add('Firewall sink', s.firewall ? 'on — table ' + s.firewall.table + ', ' + s.firewall.elements + ' set elements written and not yet expired' : 'off')
  add('Page access', s.access === 'open' ? 'open (loopback listener)' : 'bearer token')
  add('Memory bounds', s.limits.eventsMax + ' events, ' + s.limits.clientsMax + ' live pages, ' + Math.round(s.limits.streamBufferBytes / 1024) + ' KiB unsent per page, ' + s.limits.samplesKept + ' samples every ' + s.limits.sampleIntervalSeconds + ' s')
  add('Live pages', s.streams.clients + ' open, ' + s.streams.refused + ' refused (full), ' + s.streams.dropped + ' dropped (too slow)')
  list.replaceChildren(...rows)
  renderCharts()
}

// ---- charts (SVG built node by node) ----------------------------------------------

const SVG = 'http://www.w3.org/2000/svg'

function chart(title, unit, series) {
  const box = el('div', { cls: 'chart' }, el('h3', { text: title }))
  const svg = document.createElementNS(SVG, 'svg')
  svg.setAttribute('viewBox', '0 0 300 90')
  svg.setAttribute('preserveAspectRatio', 'none')
  const samples = ui.samples
  let max = 0
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v
  const top = max > 0 ? max * 1.1 : 1
  const n = Math.max(samples.length, 2)
  for (const s of series) {
    const pts = []
    s.values.forEach((v, i) => {
      if (v !== null) pts.push(((i / (n - 1)) * 300).toFixed(1) + ',' + (88 - (v / top) * 84).toFixed(1))
    })
    const line = document.createElementNS(SVG, 'polyline')
    line.setAttribute('points', pts.join(' '))
    line.setAttribute('class', s.cls)
    svg.append(line)
  }
  box.append(svg)
  const legend = el('div', { cls: 'legend' })
  for (const s of series) {
    const last = s.values.length ? s.values[s.values.length - 1] : null
    legend.append(el('span', { cls: s.cls, text: s.label + ': ' + (last === null ? '–' : fmt(last)) + (unit ? ' ' + unit : '') }))
  }
  legend.append(el('span', { text: 'max ' + fmt(max) + (unit ? ' ' + unit : '') }))
  box.append(legend)
  return box
}

function fmt(v) {
  return v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(1) : v.toFixed(2)
}

function renderCharts() {
  const s = ui.samples
  const pick = (f) => s.map(f)
  const transports = new Set()
  for (const x of s) for (const t of Object.keys(x.upstreamMs)) transports.add(t)
  const errors = pick((x) => Object.values(x.upstreamErrors).reduce((a, b) => a + b, 0))
  const charts = [
    chart('DNS queries', '/s', [
      { label: 'allowed', cls: 's-allowed', values: pick((x) => x.dnsAllowed) },
      { label: 'blocked', cls: 's-blocked', values: pick((x) => x.dnsBlocked) },
      { label: 'would block', cls: 's-would', values: pick((x) => x.dnsWouldBlock) },
    ]),
    chart('TLS connections (SNI)', '/s', [
      { label: 'allowed', cls: 's-allowed', values: pick((x) => x.sniAllowed) },
      { label: 'blocked', cls: 's-blocked', values: pick((x) => x.sniBlocked) },
      { label: 'would block', cls: 's-would', values: pick((x) => x.sniWouldBlock) },
    ]),
    chart('DNS cache hit ratio', '', [{ label: 'hits', cls: 's-accent', values: pick((x) => x.cacheHitRatio) }]),
    chart('Upstream DNS latency (mean)', 'ms', [...transports].map((t, i) => ({ label: t, cls: i ? 's-other' : 's-accent', values: pick((x) => x.upstreamMs[t] ?? null) }))),
    chart('Upstream DNS errors', '/s', [{ label: 'errors', cls: 's-blocked', values: errors }]),
    chart('Active TLS connections', '', [{ label: 'open', cls: 's-accent', values: pick((x) => x.sniActive) }]),
  ]
  $('charts').replaceChildren(...charts)
  renderUpstreams()
}

// One row per configured upstream: mean latency and errors over the newest sample and over the ring.
function renderUpstreams() {
  const s = ui.samples
  const labels = new Set()
  for (const x of s) for (const u of Object.keys(x.upstreams || {})) labels.add(u)
  const rows = [...labels].map((u) => {
    const seen = s.map((x) => (x.upstreams || {})[u]).filter((v) => v !== undefined)
    const last = seen[seen.length - 1]
    const ms = seen.map((v) => v.ms).filter((v) => v !== null)
    const avg = ms.length === 0 ? null : ms.reduce((a, b) => a + b, 0) / ms.length
    const errs = seen.reduce((a, v) => a + v.errors, 0) / Math.max(seen.length, 1)
    return el('tr', {},
      el('td', { text: u }),
      el('td', { text: last ? last.transport : '' }),
      el('td', { text: last && last.ms !== null ? fmt(last.ms) + ' ms' : '–' }),
      el('td', { text: avg === null ? '–' : fmt(avg) + ' ms' }),
      el('td', { text: last ? fmt(last.errors) + '/s' : '–' }),
      el('td', { text: fmt(errs) + '/s' }))
  })
  const head = el('tr', {}, ...['upstream', 'transport', 'latency now', 'latency 15 min', 'errors now', 'errors 15 min'].map((h) => el('th', { text: h })))
  $('upstreams').replaceChildren(el('thead', {}, head), el('tbody', {}, ...rows))
  $('upstreams').hidden = rows.length === 0
}

// Uptime, stream counts and the firewall's element count change without an event.
setInterval(() => {
  if (!$('main').hidden) refreshState()
}, 30000)

takeTokenFromFragment()
start()
