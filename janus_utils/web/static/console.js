// The janus log console: search, filters, histogram, live tail and the record view.
//
// Every value that comes from a log record is untrusted text.  It only ever
// reaches the page through textContent (never innerHTML, never an attribute
// that is a URL, never a style), and visible() first turns control
// characters and bidirectional overrides into visible marks, so a record
// can neither run script, nor draw markup, nor reorder the text around it.
// The server's Content-Security-Policy backs this up: no inline script, no
// other origin, and Trusted Types make every HTML-parsing sink throw.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const FILTERS = ['level', 'logger', 'user', 'agent', 'request', 'trace', 'since', 'until'];
  const TEXT_INPUTS = ['q', 'logger', 'user', 'agent', 'request', 'trace', 'since', 'until'];
  const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'];
  const MAX_ROWS = 500; // rows kept in the table; the live view drops the oldest
  const DEBOUNCE_MS = 150;
  const TRACE_WINDOW_MS = 3600 * 1000; // a trace is searched within an hour either side

  const state = {
    seq: 0,
    cursor: null,
    live: true,
    source: null,
    controller: null,
    shown: new Set(),
    openId: null,
    sampled: { shown: 0, matched: 0, since: null, timer: null },
  };

  // ------------------------------------------------------------ untrusted text
  // Control characters (ANSI escapes, BEL, NUL...) are shown as \x1b-style
  // escapes and bidi controls as <U+202E>: plain ASCII that every font has,
  // so an escape sequence is seen for what it is and an override reorders nothing.
  const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  const hex = (ch, width) => ch.charCodeAt(0).toString(16).toUpperCase().padStart(width, '0');

  function visible(value, oneLine) {
    if (value === null || value === undefined) return '';
    let text = typeof value === 'string' ? value : JSON.stringify(value);
    if (oneLine) text = text.replace(/[\t\n]/g, (ch) => (ch === '\t' ? '\\t' : '\\n'));
    return text.replace(CONTROL, (ch) => '\\x' + hex(ch, 2).toLowerCase()).replace(BIDI, (ch) => '<U+' + hex(ch, 4) + '>');
  }

  // 1234567 as "1,234,567" (a count of records).  Not toLocaleString: its first call loads the
  // browser's locale data, 60-90 ms of a fresh tab's first screen.
  function grouped(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------ status and notices
  function status(text) {
    $('status').textContent = text;
  }

  function notice(text, kind) {
    const box = $('notice');
    box.textContent = text;
    box.className = kind || '';
    box.hidden = !text;
  }

  // ------------------------------------------------------------ the selection
  function params() {
    const p = new URLSearchParams();
    const q = $('q').value.trim();
    if (q) p.set('q', q);
    for (const name of FILTERS) {
      const value = $(name).value.trim();
      if (value) p.set(name, value);
    }
    return p;
  }

  function syncAddress() {
    const p = params();
    if (state.openId !== null) p.set('open', String(state.openId));
    const query = p.toString();
    // Unchanged (a page just opened on its address): no history update to pay for.
    if (location.search === (query ? '?' + query : '')) return;
    history.replaceState(null, '', query ? '?' + query : location.pathname);
  }

  function loadAddress() {
    const p = new URLSearchParams(location.search);
    $('q').value = p.get('q') || '';
    for (const name of FILTERS) $(name).value = p.get(name) || '';
    const open = p.get('open');
    return open && /^\d+$/.test(open) ? Number(open) : null;
  }

  function setFilter(name, value, record) {
    $(name).value = value;
    if (name === 'trace' && record) {
      // trace_id has no index: bound the search to the hours around the record.
      const at = record.ts / 1e6;
      $('since').value = new Date(at - TRACE_WINDOW_MS).toISOString();
      $('until').value = new Date(at + TRACE_WINDOW_MS).toISOString();
    }
    refresh();
  }

  // ------------------------------------------------------------ fetching
  async function getJSON(url, signal) {
    const response = await fetch(url, { signal, credentials: 'same-origin' });
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = { error: 'the server answered ' + response.status + ' without JSON' };
    }
    if (!response.ok) throw new Error(data && data.error ? data.error : 'HTTP ' + response.status);
    return data;
  }

  // The page arrives with its first screen inside it (the server's page()):
  // taken once, and only if it answers the selection the form now holds.
  function firstScreen(p) {
    const node = $('first-screen');
    if (!node) return null;
    node.remove();
    try {
      const data = JSON.parse(node.textContent);
      return data && data.selection === p.toString() ? data : null;
    } catch (err) {
      return null;
    }
  }

  async function refresh() {
    const seq = ++state.seq;
    if (state.controller) state.controller.abort();
    const controller = (state.controller = new AbortController());
    syncAddress();
    closeLive();
    status('searching…');
    const p = params();
    performance.mark('search-sent');
    const first = firstScreen(p) || {};
    // The histogram first: it reads the chart's width before the table's rows
    // make that a layout of the whole page.  Asked for at once, beside the
    // records, when the page did not bring it: it is the slower of the two.
    if (first.histogram) showHistogram(first.histogram);
    else loadHistogram(p, seq, controller.signal);
    try {
      const data = first.records || (await getJSON('/api/records?' + p, controller.signal));
      if (seq !== state.seq) return;
      renderRecords(data.records);
      performance.mark('records-shown');
      state.cursor = data.cursor;
      notice('');
      status(grouped(data.records.length) + ' newest · ' + data.took_ms + ' ms');
      $('records').dataset.loaded = String(seq);
      startLive();
    } catch (err) {
      if (err.name === 'AbortError' || seq !== state.seq) return;
      status('');
      notice(err.message, 'error');
    }
  }

  let debounceTimer = null;
  function refreshSoon() {
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(refresh, DEBOUNCE_MS);
  }

  // ------------------------------------------------------------ the table
  function chip(name, value, record) {
    const button = el('button', 'chip', visible(value, true));
    button.type = 'button';
    button.dataset.filter = name;
    button.title = 'show only records with this ' + name;
    button.addEventListener('click', (event) => {
      event.stopPropagation();
      setFilter(name, value, record);
    });
    return button;
  }

  function cell(cls, text) {
    return el('td', cls, text);
  }

  function row(record) {
    const tr = el('tr', 'lv-' + (LEVELS.includes(record.level_name) ? record.level_name : 'OTHER'));
    tr.dataset.id = String(record.id);
    tr.dataset.ts = String(record.ts);
    tr.append(cell('time', record.time.replace('T', ' ').replace('Z', '')));
    tr.append(cell('level', record.level_name));
    tr.append(cell('logger', visible(record.logger, true)));
    const message = cell('message');
    message.append(el('span', 'text', visible(record.message, true)));
    if (record.message_chars > record.message.length) {
      message.append(el('span', 'more', ' … (' + grouped(record.message_chars) + ' characters)'));
    }
    if (record.has_exception) message.append(el('span', 'exc', ' exception'));
    tr.append(message);
    const who = cell('user');
    if (record.user_id !== null) who.append(chip('user', record.user_id, record));
    if (record.agent_id !== null) who.append(chip('agent', record.agent_id, record));
    tr.append(who);
    const request = cell('request');
    if (record.request_id !== null) request.append(chip('request', record.request_id, record));
    tr.append(request);
    tr.addEventListener('click', () => openRecord(record.id));
    if (record.id === state.openId) tr.classList.add('open');
    return tr;
  }

  function renderRecords(records) {
    const body = $('records').tBodies[0];
    state.shown = new Set(records.map((r) => r.id));
    body.replaceChildren(...records.map(row));
    if (!records.length) {
      const empty = el('tr', 'empty');
      const td = el('td', null, 'No records match.');
      td.colSpan = 6;
      empty.append(td);
      body.append(empty);
    }
  }

  // ------------------------------------------------------------ histogram
  const SVG = 'http://www.w3.org/2000/svg';

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  async function loadHistogram(p, seq, signal) {
    $('histogram-note').textContent = 'counting…';
    try {
      const data = await getJSON('/api/histogram?' + p, signal);
      if (seq !== state.seq) return;
      showHistogram(data);
    } catch (err) {
      if (err.name === 'AbortError' || seq !== state.seq) return;
      $('histogram-note').textContent = err.message;
    }
  }

  function showHistogram(data) {
    drawHistogram(data);
    performance.mark('histogram-shown');
  }

  // The chart is drawn in its own units and stretched to the page's width by
  // the browser (preserveAspectRatio none): nothing here reads a layout, and
  // a resized window needs no redraw.  The times under it are HTML text.
  const CHART_WIDTH = 1000;
  const CHART_HEIGHT = 76;

  function drawHistogram(data) {
    const chart = $('histogram');
    const width = CHART_WIDTH;
    const height = CHART_HEIGHT;
    chart.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    chart.setAttribute('preserveAspectRatio', 'none');
    chart.replaceChildren();
    const [axisStart, axisEnd] = $('histogram-axis').children;
    axisStart.textContent = '';
    axisEnd.textContent = '';
    const buckets = data.buckets || [];
    if (!buckets.length) {
      $('histogram-note').textContent = 'no records';
      chart.dataset.total = '0';
      return;
    }
    const step = data.bucket_ns;
    const first = buckets[0].ts;
    const count = Math.min(Math.round((buckets[buckets.length - 1].ts - first) / step) + 1, 2000);
    const byStart = new Map(buckets.map((b) => [b.ts, b.counts]));
    let peak = 1;
    let total = 0;
    const columns = [];
    for (let i = 0; i < count; i++) {
      const start = first + i * step;
      const counts = byStart.get(start) || {};
      const sum = Object.values(counts).reduce((a, b) => a + b, 0);
      total += sum;
      peak = Math.max(peak, sum);
      columns.push({ start, counts, sum });
    }
    const barWidth = width / count;
    const gap = Math.min(1, barWidth / 4);
    const bars = document.createDocumentFragment();
    columns.forEach((column, i) => {
      const group = svg('g', { class: 'bucket' });
      const title = svg('title');
      const parts = Object.entries(column.counts).map(([name, n]) => visible(name, true) + ' ' + grouped(n));
      title.textContent = new Date(column.start / 1e6).toISOString().replace('.000Z', 'Z') + ' (' + data.bucket + '): ' +
        grouped(column.sum) + (parts.length ? ' — ' + parts.join(', ') : '');
      group.append(title);
      group.append(svg('rect', { x: i * barWidth, y: 0, width: barWidth, height, class: 'hit' }));
      let y = height;
      for (const name of [...LEVELS, '(other)']) {
        const n = column.counts[name];
        if (!n) continue;
        const h = (n / peak) * (height - 4);
        y -= h;
        group.append(svg('rect', {
          x: i * barWidth + gap / 2, y, width: Math.max(barWidth - gap, 0.5), height: h,
          class: 'h-' + (LEVELS.includes(name) ? name : 'OTHER'),
        }));
      }
      group.addEventListener('click', () => {
        $('since').value = new Date(column.start / 1e6).toISOString();
        $('until').value = new Date((column.start + step) / 1e6).toISOString();
        refresh();
      });
      bars.append(group);
    });
    chart.append(bars);
    axisStart.textContent = new Date(first / 1e6).toISOString().slice(0, 16).replace('T', ' ');
    axisEnd.textContent = new Date((first + count * step) / 1e6).toISOString().slice(0, 16).replace('T', ' ');
    chart.dataset.total = String(total);
    let note = grouped(total) + ' records, per ' + data.bucket;
    if (data.recent_since) {
      note += ' since ' + new Date(data.recent_since / 1e6).toISOString().slice(0, 19).replace('T', ' ') +
        ' (the time of the newest ' + grouped(data.recent_rows) + ' records; set since to count further back)';
    }
    $('histogram-note').textContent = note + ' · ' + data.took_ms + ' ms';
  }

  // ------------------------------------------------------------ live view
  function closeLive() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  function startLive() {
    closeLive();
    if (!state.live || state.cursor === null) return;
    const p = params();
    p.set('cursor', String(state.cursor));
    const source = (state.source = new EventSource('/api/live?' + p));
    source.addEventListener('records', (event) => {
      if (source !== state.source) return;
      const data = JSON.parse(event.data);
      state.cursor = data.cursor;
      addLive(data.records, data.matched);
    });
    source.addEventListener('problem', (event) => notice(JSON.parse(event.data).error, 'error'));
    source.addEventListener('hello', () => $('live').classList.add('on'));
    source.onerror = () => {
      $('live').classList.remove('on');
    };
  }

  function addLive(records, matched) {
    const body = $('records').tBodies[0];
    const empty = body.querySelector('tr.empty');
    if (empty) empty.remove();
    const arrived = String(Date.now());
    let added = 0;
    for (const record of records) {
      if (state.shown.has(record.id)) continue;
      state.shown.add(record.id);
      const tr = row(record);
      tr.classList.add('new');
      tr.dataset.arrived = arrived;
      body.prepend(tr);
      added++;
    }
    while (body.rows.length > MAX_ROWS) {
      const last = body.rows[body.rows.length - 1];
      state.shown.delete(Number(last.dataset.id));
      last.remove();
    }
    if (matched > records.length) sampled(records.length, matched);
    if (added) status('live · ' + grouped(body.rows.length) + ' shown');
  }

  function sampled(shown, matched) {
    const s = state.sampled;
    if (s.since === null) s.since = new Date();
    s.shown += shown;
    s.matched += matched;
    notice(
      'Flood: ' + grouped(s.matched) + ' new records since ' + s.since.toISOString().slice(11, 19) +
      ' UTC, ' + grouped(s.shown) + ' shown (a sample of the newest). Pause and search to see them all.',
      'sampling'
    );
    clearTimeout(s.timer);
    s.timer = setTimeout(() => {
      s.shown = s.matched = 0;
      s.since = null;
      if ($('notice').className === 'sampling') notice('');
    }, 5000);
  }

  function toggleLive() {
    state.live = !state.live;
    const button = $('live');
    button.textContent = state.live ? 'Pause' : 'Resume';
    button.setAttribute('aria-pressed', String(state.live));
    if (state.live) {
      startLive();
      status('live');
    } else {
      closeLive();
      button.classList.remove('on');
      status('paused');
    }
  }

  // ------------------------------------------------------------ one record
  function term(list, name, value, filter, record) {
    const dt = el('dt', null, name);
    const dd = el('dd');
    if (value === null || value === undefined || value === '') {
      dd.textContent = '—';
      dd.className = 'none';
    } else if (filter) {
      dd.append(chip(filter, value, record));
    } else {
      dd.textContent = visible(value, false);
    }
    dd.dataset.field = name;
    list.append(dt, dd);
  }

  async function openRecord(id) {
    state.openId = id;
    syncAddress();
    for (const tr of $('records').tBodies[0].rows) tr.classList.toggle('open', tr.dataset.id === String(id));
    let data;
    try {
      data = await getJSON('/api/record/' + id);
    } catch (err) {
      notice(err.message, 'error');
      return;
    }
    if (state.openId !== id) return;
    const r = data.record;
    $('detail-title').textContent = 'record ' + r.id;
    const list = $('detail-fields');
    list.replaceChildren();
    term(list, 'time', r.time);
    term(list, 'level', r.level_name);
    term(list, 'logger', r.logger);
    term(list, 'message', r.message);
    term(list, 'user_id', r.user_id, 'user', r);
    term(list, 'agent_id', r.agent_id, 'agent', r);
    term(list, 'request_id', r.request_id, 'request', r);
    term(list, 'trace_id', r.trace_id, 'trace', r);
    term(list, 'span_id', r.span_id);
    term(list, 'pid', r.pid);
    term(list, 'thread', r.thread);
    // Columns this page does not name (newer schemas add some): shown all the same.
    const named = new Set(['id', 'ts', 'time', 'level', 'level_name', 'logger', 'message', 'user_id', 'agent_id',
      'request_id', 'trace_id', 'span_id', 'pid', 'thread', 'fields', 'exception', 'snippet']);
    for (const [key, value] of Object.entries(r)) if (!named.has(key)) term(list, key, value);
    for (const [key, value] of Object.entries(r.fields || {})) term(list, key, value);
    const exc = $('detail-exception');
    exc.textContent = r.exception ? visible(r.exception, false) : '';
    exc.hidden = !r.exception;
    $('exc-title').hidden = !r.exception;
    const around = $('neighbours');
    around.replaceChildren();
    const item = (s, self) => {
      const li = el('li', self ? 'self' : 'lv-' + s.level_name);
      li.dataset.id = String(s.id);
      li.append(el('span', 'time', s.time.slice(11, 23)), el('span', 'level', s.level_name),
        el('span', 'logger', visible(s.logger, true)), el('span', 'text', visible(s.message, true)));
      if (!self) li.addEventListener('click', () => openRecord(s.id));
      return li;
    };
    for (const s of data.before) around.append(item(s, false));
    around.append(item({ ...r, message: r.message.slice(0, 2000) }, true));
    for (const s of data.after) around.append(item(s, false));
    $('detail').hidden = false;
    $('detail').dataset.id = String(r.id);
  }

  function closeRecord() {
    state.openId = null;
    $('detail').hidden = true;
    for (const tr of $('records').tBodies[0].rows) tr.classList.remove('open');
    syncAddress();
  }

  // ------------------------------------------------------------ wiring
  function start() {
    const open = loadAddress();
    for (const name of TEXT_INPUTS) {
      $(name).addEventListener('input', refreshSoon);
    }
    $('level').addEventListener('change', refresh);
    $('filters').addEventListener('submit', (event) => {
      event.preventDefault();
      clearTimeout(debounceTimer);
      refresh();
    });
    $('clear').addEventListener('click', () => {
      $('q').value = '';
      for (const name of FILTERS) $(name).value = '';
      refresh();
    });
    $('live').addEventListener('click', toggleLive);
    $('close').addEventListener('click', closeRecord);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && state.openId !== null) closeRecord();
    });
    refresh();
    if (open !== null) openRecord(open);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
