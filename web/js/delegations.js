// Delegations: the Delegations tab of a workspace (what it asked of others
// and what others asked of it) and the operator's view of every delegation
// (a dialog from the top bar). Each row shows a status chip, who asked
// whom, the task's and the result's previews, the deadline and the age of
// the callee's last heartbeat. Chips move live: the workspace's event
// stream (followed by chat.js, relayed on the bus as `stream`) and, for the
// global view, GET /admin/delegations/events carry a `delegation` event per
// move; the row is then re-read for its previews.

import { api, errorOf, unauthorized, wsPath } from './api.js';
import { ago, el, sleep } from './dom.js';
import { bus, serverNow, state } from './state.js';
import { readEventStream } from './stream.js';
import { registerTab, select } from './tabs.js';
import { traceButton } from './trace.js';

const STATUSES = ['queued', 'dispatched', 'in_progress', 'completed', 'failed', 'stuck'];
const LABEL = { in_progress: 'in progress' };
const LIMIT = 100;

const label = (s) => LABEL[s] || s;

function nameOf(id) {
  if (id === 'operator') return 'operator';
  return state.workspaces.find((w) => w.id === id)?.name || id.slice(0, 8);
}

/** "in 5 min" for a future time, "5 min ago" for a past one. */
function relative(iso) {
  const ms = Date.parse(iso) - serverNow();
  if (ms <= 0) return ago(iso, serverNow());
  const s = Math.round(ms / 1000);
  if (s < 60) return `in ${s} s`;
  if (s < 7200) return `in ${Math.round(s / 60)} min`; // "in 1 h" would hide up to half an hour
  if (s < 86400) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

function timing(d) {
  const parts = [`asked ${ago(d.created_at, serverNow())}`];
  if (d.deadline_at) {
    const over = Date.parse(d.deadline_at) <= serverNow();
    parts.push(over ? `deadline passed ${ago(d.deadline_at, serverNow())}` : `deadline ${relative(d.deadline_at)}`);
  } else {
    parts.push('no deadline');
  }
  parts.push(d.last_heartbeat_at ? `last heartbeat ${ago(d.last_heartbeat_at, serverNow())}` : 'no heartbeat yet');
  return parts.join(' · ');
}

/** "42 s", "3.5 min", "2.1 h": a duration in seconds, briefly. */
function seconds(s) {
  if (s < 60) return `${Number(s.toFixed(s < 10 ? 1 : 0))} s`;
  if (s < 3600) return `${Number((s / 60).toFixed(1))} min`;
  return `${Number((s / 3600).toFixed(1))} h`;
}

function chip(status) {
  return el('span', { class: `dchip dchip-${status}`, dataset: { status } }, label(status));
}

/** One delegation as a list item. */
function renderItem(d) {
  const li = el('li', { class: 'delegation', dataset: { did: d.id, status: d.status } });
  const outcome = [];
  if (d.result_preview) outcome.push(el('p', { class: 'dresult' }, el('span', { class: 'dlabel' }, 'Result: '), d.result_preview));
  if (d.error_detail) outcome.push(el('p', { class: 'derror' }, el('span', { class: 'dlabel' }, 'Error: '), d.error_detail));
  li.append(
    el('div', { class: 'dhead' }, chip(d.status),
      el('span', { class: 'dparties' }, `${nameOf(d.caller_id)} → ${nameOf(d.callee_id)}`),
      d.trace_id ? traceButton(d.trace_id, `the delegation ${nameOf(d.caller_id)} → ${nameOf(d.callee_id)}`) : null),
    el('p', { class: 'dtask' }, el('span', { class: 'dlabel' }, 'Task: '), d.task_preview),
    ...outcome,
    el('p', { class: 'hint dtime' }, timing(d)),
    el('button', {
      type: 'button', class: 'ghost dthread',
      onclick: () => bus.dispatchEvent(new CustomEvent('open-thread', { detail: { did: d.id, party: d.callee_id } })),
    }, 'Open thread'),
  );
  li.delegation = d;
  return li;
}

/**
 * A delegations panel; `open(listPath, concerns)` points it at a listing
 * (`concerns(move)` says whether a live move belongs in it).
 */
function delegationsPanel(prefix, headingLevel) {
  let base = null;
  let concerns = () => false;
  const ids = (n) => `${prefix}-${n}`;
  const heading = el(headingLevel, { id: ids('title'), class: 'panel-title' }, 'Delegations');
  const filter = el('select', { id: ids('status') },
    el('option', { value: '' }, 'Every status'),
    ...STATUSES.map((s) => el('option', { value: s }, label(s))));
  const refresh = el('button', { type: 'button', class: 'ghost' }, 'Refresh');
  const list = el('ul', { class: 'delegation-list', id: ids('list'), 'aria-labelledby': ids('title') });
  const empty = el('p', { class: 'hint', hidden: true }, 'No delegation yet.');
  const error = el('p', { class: 'error', role: 'alert' });
  const announce = el('p', { class: 'visually-hidden', role: 'status' });
  // "Showing 100 of 302" and the ledger's figures: a listing never looks
  // whole when it is not.
  const summary = el('p', { class: 'hint dstats', id: ids('stats') });
  const more = el('button', { type: 'button', class: 'ghost', hidden: true }, 'Load more');
  let stats = null;
  const root = el('section', { class: 'panel delegations', 'aria-labelledby': ids('title') },
    heading,
    el('div', { class: 'panel-tools' }, el('label', { for: ids('status') }, 'Status'), filter, refresh),
    summary, error, announce, list, empty, more);

  const query = (status, before) =>
    `?limit=${LIMIT}${status ? `&status=${status}` : ''}${before ? `&before=${encodeURIComponent(before)}` : ''}`;

  function summarize() {
    if (!stats) {
      summary.textContent = '';
      return;
    }
    const status = filter.value;
    const total = status ? (stats.counts[status] ?? 0) : Object.values(stats.counts).reduce((a, n) => a + n, 0);
    const parts = [`Showing ${list.children.length} of ${total}`];
    if (!status) {
      for (const s of STATUSES) if (stats.counts[s]) parts.push(`${stats.counts[s]} ${label(s)}`);
    }
    if (stats.p50_completion_s !== null) {
      parts.push(`completion p50 ${seconds(stats.p50_completion_s)}, p95 ${seconds(stats.p95_completion_s)} (24 h)`);
    }
    if (stats.oldest_in_flight_age_s !== null) parts.push(`oldest in flight ${seconds(stats.oldest_in_flight_age_s)}`);
    summary.textContent = parts.join(' · ');
  }

  async function readStats(at) {
    try {
      const s = await api(`${at}/stats`);
      if (at === base) {
        stats = s;
        summarize();
      }
    } catch {
      // the listing still shows; its figures come with the next read
    }
  }

  // Live moves re-read the figures, at most once a second.
  let statsTimer = null;
  function statsSoon() {
    if (statsTimer || !base) return;
    const at = base;
    statsTimer = setTimeout(() => {
      statsTimer = null;
      readStats(at);
    }, 1000);
  }

  async function load() {
    if (!base) return;
    const at = base;
    const status = filter.value;
    try {
      const [rows] = await Promise.all([api(`${at}${query(status)}`), readStats(at)]);
      if (at !== base || status !== filter.value) return;
      error.textContent = '';
      list.replaceChildren(...rows.map(renderItem));
      empty.hidden = rows.length !== 0;
      more.hidden = rows.length < LIMIT;
      summarize();
    } catch (e) {
      if (at === base) error.textContent = `Could not list the delegations: ${e.message}`;
    }
  }

  /** The next page, older than the last row shown. */
  async function loadMore() {
    const last = list.lastElementChild?.dataset.did;
    if (!base || !last) return;
    const at = base;
    const status = filter.value;
    more.disabled = true;
    try {
      const rows = await api(`${at}${query(status, last)}`);
      if (at !== base || status !== filter.value) return;
      const shown = new Set([...list.children].map((li) => li.dataset.did));
      list.append(...rows.filter((d) => !shown.has(d.id)).map(renderItem));
      more.hidden = rows.length < LIMIT;
      summarize();
      announce.textContent = `${rows.length} more delegations shown.`;
    } catch (e) {
      error.textContent = `Could not list more delegations: ${e.message}`;
    } finally {
      more.disabled = false;
    }
  }

  /** A live move: the chip changes at once, then the row is re-read. */
  async function apply(move) {
    if (!base || !concerns(move)) return;
    const item = list.querySelector(`[data-did="${CSS.escape(move.delegation_id)}"]`);
    if (item) {
      item.dataset.status = move.status;
      item.querySelector('.dchip').replaceWith(chip(move.status));
    }
    if (move.from !== move.status) announce.textContent = `Delegation to ${nameOf(move.callee_id)}: ${label(move.status)}.`;
    statsSoon();
    let row;
    try {
      row = await api(wsPath(move.callee_id, `/delegations/${encodeURIComponent(move.delegation_id)}`));
    } catch {
      return; // gone (purged, workspace deleted): the chip says the last news
    }
    const now = list.querySelector(`[data-did="${CSS.escape(move.delegation_id)}"]`);
    // A later move may have been applied while this one was read.
    if (now && STATUSES.includes(now.dataset.status) && now.dataset.status !== row.status) return;
    if (now) now.replaceWith(renderItem(row));
    else if (!filter.value || filter.value === row.status) {
      list.prepend(renderItem(row));
      empty.hidden = true;
    }
  }

  filter.addEventListener('change', load);
  refresh.addEventListener('click', load);
  more.addEventListener('click', loadMore);
  bus.addEventListener('tick', () => {
    if (!base) return;
    for (const li of list.children) {
      const t = li.querySelector('.dtime');
      const text = timing(li.delegation);
      if (t && t.textContent !== text) t.textContent = text;
    }
  });

  let loaded = Promise.resolve();

  return {
    root,
    apply,
    load,
    open(path, title, test) {
      base = path;
      concerns = test;
      heading.textContent = title;
      filter.value = '';
      list.replaceChildren();
      empty.hidden = true;
      more.hidden = true;
      stats = null;
      summary.textContent = '';
      error.textContent = '';
      loaded = load();
      return loaded;
    },
    /** Focuses delegation `did`'s row once the listing is read (a link led here). */
    async reveal(did) {
      await loaded;
      const item = list.querySelector(`[data-did="${CSS.escape(did)}"]`);
      if (!item) {
        error.textContent = 'That delegation is not among the newest listed here.';
        return;
      }
      for (const li of list.querySelectorAll('.delegation.target')) li.classList.remove('target');
      item.classList.add('target');
      item.tabIndex = -1;
      item.scrollIntoView({ block: 'nearest' });
      item.focus();
    },
    close() {
      base = null;
    },
  };
}

/** Follows GET /admin/delegations/events until `signal` aborts. */
export async function followAll(signal, onEvent) {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      const res = await fetch('/admin/delegations/events', {
        headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal,
      });
      if (res.status === 401) {
        unauthorized();
        return;
      }
      if (!res.ok) throw await errorOf(res);
      backoff = 1000;
      onEvent({ event: 'resync' }); // whatever moved while we were away
      await readEventStream(res.body, signal, onEvent);
    } catch {
      if (signal.aborted) return;
    }
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 30_000);
  }
}

/** The workspace's Delegations tab, and the top bar's global view. */
export function initDelegations() {
  const own = delegationsPanel('ws-delegations', 'h3');
  registerTab('delegations', 'Delegations', el('div', { id: 'delegations-panel' }, own.root), {
    show: (ws) => own.open(wsPath(ws.id, '/delegations'), `Delegations of ${ws.name}`,
      (m) => m.callee_id === ws.id || m.caller_id === ws.id),
    hide: () => own.close(),
  });
  // A delegation's link in the conversation: its row in this tab.
  bus.addEventListener('show-delegation', (e) => {
    select('delegations');
    own.reveal(e.detail);
  });
  bus.addEventListener('stream', (e) => {
    if (e.detail.event === 'delegation') own.apply(e.detail.payload);
    else if (e.detail.event === 'resync') own.load(); // moves missed while reconnecting
  });

  const all = delegationsPanel('all-delegations', 'h3');
  let follow = null;
  const dialog = el('dialog', { id: 'delegations-dialog', class: 'panel-dialog', 'aria-labelledby': 'delegations-heading' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'delegations-heading' }, 'All delegations'),
      el('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Close')),
    all.root);
  dialog.addEventListener('close', () => {
    follow?.abort();
    follow = null;
    all.close();
  });
  document.querySelector('main').append(dialog);
  return () => {
    dialog.showModal();
    all.open('/admin/delegations', 'Every workspace, newest first', () => true);
    follow?.abort();
    follow = new AbortController();
    followAll(follow.signal, ({ event, data }) => {
      if (event === 'resync') {
        all.load();
        return;
      }
      if (event !== 'delegation') return;
      try {
        all.apply(JSON.parse(data));
      } catch {
        // not JSON: ignore
      }
    });
  };
}
