// A delegation as a thread (issue 30, missing 5): opened from a row of a
// Delegations list (bus `open-thread`), a dialog shows the whole task, the
// status history (the moments of its hop in its trace, GET
// /traces/:trace_id), the result or error, and the sub-delegations its
// callee made while on it (the delegation hops hanging under its span),
// each opening its own thread. The operator may cancel it while in flight,
// retry it once failed, and delegate a new task to the same callee; a
// viewer's page shows none of these (`.op-action`, see style.css). While
// it is shown the thread follows the ledger's moves of the whole fleet
// (GET /admin/delegations/events), not the open chat's stream: opened
// from the global view, or for a sub-delegation between two other
// workspaces, its labels would otherwise keep an old status.

import { api, wsPath } from './api.js';
import { followAll } from './delegations.js';
import { dateFormat, el } from './dom.js';
import { bus, state } from './state.js';

const LABEL = { in_progress: 'in progress' };
const label = (s) => LABEL[s] || s;
const TERMINAL = new Set(['completed', 'failed']);

function nameOf(id) {
  if (id === 'operator') return 'operator';
  if (typeof id === 'string' && id.startsWith('schedule:')) return 'a schedule';
  return state.workspaces.find((w) => w.id === id)?.name || String(id).slice(0, 8);
}

const chip = (status) => el('span', { class: `dchip dchip-${status}`, dataset: { status } }, label(status));

// One formatter for every time in the thread, made once.
const TIME = dateFormat({ dateStyle: 'medium', timeStyle: 'medium' });
const when = (iso) => el('time', { datetime: iso }, TIME.format(new Date(iso)));

/** The span of delegation `did` in a trace's tree, depth first. */
function findHop(nodes, did) {
  for (const n of nodes) {
    if (n.delegation_id === did) return n;
    const found = findHop(n.children || [], did);
    if (found) return found;
  }
  return null;
}

/** The delegation hops under `node`, nested as they hang (other spans skipped). */
function subDelegations(node) {
  const out = [];
  for (const c of node.children || []) {
    if (c.delegation_id) out.push({ hop: c, children: subDelegations(c) });
    else out.push(...subDelegations(c));
  }
  return out;
}

/** The moments of a delegation without a trace: what its row records. */
function rowHistory(d) {
  const moments = [{ name: 'queued', at: d.created_at }];
  if (d.completed_at) moments.push({ name: d.status, at: d.completed_at });
  else if (d.status !== 'queued') moments.push({ name: d.status, at: d.updated_at });
  return moments;
}

/** Builds the dialog once; answers `open(did, party)`. */
export function initThreads() {
  const title = el('h2', { id: 'thread-title', tabindex: '-1' }, 'Delegation');
  const body = el('div', { class: 'thread-body' });
  const status = el('p', { class: 'hint', role: 'status', id: 'thread-status' });
  const error = el('p', { class: 'error', role: 'alert', id: 'thread-error' });
  const cancel = el('button', { type: 'button', class: 'op-action', id: 'thread-cancel' }, 'Cancel the delegation…');
  const retry = el('button', { type: 'button', class: 'op-action', id: 'thread-retry' }, 'Retry');
  const task = el('textarea', { id: 'thread-new-task', rows: '3', required: true, maxlength: '65536' });
  const newLabel = el('label', { for: 'thread-new-task' }, 'New task');
  const form = el('form', { class: 'thread-new op-action', id: 'thread-new', novalidate: true },
    newLabel, task, el('button', { type: 'submit', class: 'primary' }, 'Delegate'));
  const close = el('button', { type: 'button', class: 'ghost' }, 'Close');
  const dialog = el('dialog', { id: 'thread-dialog', class: 'panel-dialog thread-dialog', 'aria-labelledby': 'thread-title' },
    el('div', { class: 'dialog-head' }, title, close),
    body, el('div', { class: 'thread-actions' }, cancel, retry), form, status, error);
  document.querySelector('main').append(dialog);

  let shown = null; // { did, party, row }
  let reading = 0;

  function section(heading, ...content) {
    const id = `thread-h-${heading.toLowerCase().replace(/\W+/g, '-')}`;
    return el('section', { 'aria-labelledby': id }, el('h3', { id, class: 'panel-subtitle' }, heading), ...content);
  }

  function subList(items) {
    return el('ul', { class: 'thread-subs' }, ...items.map(({ hop, children }) => el('li', {},
      el('button', {
        type: 'button', class: 'linkish', dataset: { did: hop.delegation_id },
        onclick: () => open(hop.delegation_id, hop.workspace_id),
      }, `${nameOf(hop.caller_id)} → ${nameOf(hop.workspace_id)}`),
      ' ', chip(hop.status || 'queued'),
      children.length ? subList(children) : null)));
  }

  function draw(d, hop) {
    title.textContent = `${nameOf(d.caller_id)} → ${nameOf(d.callee_id)} · delegation`;
    const moments = hop?.events?.length ? hop.events : rowHistory(d);
    const subs = hop ? subDelegations(hop) : [];
    shown.subs = new Set();
    const note = (items) => items.forEach(({ hop: h, children }) => { shown.subs.add(h.delegation_id); note(children); });
    note(subs);
    body.replaceChildren(
      el('p', { class: 'thread-state' }, chip(d.status), ' ', el('span', { class: 'hint' }, `id ${d.id}`)),
      section('Task', el('p', { class: 'thread-task' }, d.task)),
      section('Status history', el('ol', { class: 'thread-history' },
        ...moments.map((m) => el('li', { dataset: { status: m.name } }, chip(m.name), ' ', when(m.at))))),
      d.result_preview ? section('Result', el('p', { class: 'dresult' }, d.result_preview)) : null,
      d.error_detail ? section('Error', el('p', { class: 'derror' }, d.error_detail)) : null,
      section('Sub-delegations', subs.length ? subList(subs)
        : el('p', { class: 'hint' }, hop ? 'None: the callee delegated nothing on.' : 'Not known: this delegation has no trace.')),
    );
    cancel.hidden = TERMINAL.has(d.status);
    retry.hidden = d.status !== 'failed';
    newLabel.textContent = `New task for ${nameOf(d.callee_id)}`;
  }

  /** (Re-)reads the shown delegation and its trace, then draws them. */
  async function load() {
    if (!shown) return;
    const { did, party } = shown;
    const n = ++reading;
    try {
      const d = await api(wsPath(party, `/delegations/${encodeURIComponent(did)}`));
      let hop = null;
      if (d.trace_id) {
        try {
          hop = findHop((await api(`/traces/${encodeURIComponent(d.trace_id)}`)).roots, did);
        } catch {
          // the trace was purged or is out of reach: the row's own moments
        }
      }
      if (n !== reading || shown?.did !== did) return;
      shown.row = d;
      error.textContent = '';
      draw(d, hop);
    } catch (e) {
      if (n === reading) error.textContent = `Could not read the delegation: ${e.message}`;
    }
  }

  // The fleet's ledger moves, followed while the dialog is open; a move
  // of the shown delegation, of one of its sub-delegations, or a new one
  // its callee makes re-reads it (one read at a time, the last one kept).
  let follow = null;
  let again = false;
  let loading = null;
  const reload = () => {
    if (loading) {
      again = true;
      return;
    }
    loading = load().finally(() => {
      loading = null;
      if (again) {
        again = false;
        reload();
      }
    });
  };
  const concerns = (m) => shown && (m.delegation_id === shown.did || shown.subs?.has(m.delegation_id)
    || (shown.row && m.caller_id === shown.row.callee_id));
  function followLedger() {
    if (follow) return;
    follow = new AbortController();
    followAll(follow.signal, ({ event, data }) => {
      if (!shown) return;
      if (event === 'resync') {
        reload();
        return;
      }
      if (event !== 'delegation') return;
      try {
        if (concerns(JSON.parse(data))) reload();
      } catch {
        // not JSON: ignore
      }
    });
  }

  async function open(did, party) {
    shown = { did, party, row: null, subs: new Set() };
    followLedger();
    status.textContent = '';
    error.textContent = '';
    body.replaceChildren(el('p', { class: 'hint' }, 'Reading…'));
    cancel.hidden = true;
    retry.hidden = true;
    if (!dialog.open) dialog.showModal();
    await load();
    title.focus();
  }

  async function act(button, run) {
    button.disabled = true;
    error.textContent = '';
    try {
      await run();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  }

  cancel.addEventListener('click', () => act(cancel, async () => {
    const d = shown?.row;
    if (!d) return;
    const sure = window.confirm(`Cancel the delegation from ${nameOf(d.caller_id)} to ${nameOf(d.callee_id)}? `
      + 'It fails with "cancelled by the operator"; the caller is told, and the callee\'s later reports are refused.');
    if (!sure) return;
    await api(wsPath(d.callee_id, `/delegations/${encodeURIComponent(d.id)}/cancel`), { method: 'POST' });
    status.textContent = 'Cancelled.';
    await load();
  }));

  retry.addEventListener('click', () => act(retry, async () => {
    const d = shown?.row;
    if (!d) return;
    const made = await api(wsPath(d.callee_id, `/delegations/${encodeURIComponent(d.id)}/retry`), { method: 'POST' });
    await open(made.delegation_id, d.callee_id);
    status.textContent = made.deduplicated ? 'Retried before: this is that retry.' : 'Retried: this is the new delegation.';
  }));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const submit = form.querySelector('button');
    act(submit, async () => {
      const d = shown?.row;
      const text = task.value.trim();
      if (!d) return;
      if (!text) {
        error.textContent = 'Write the task first.';
        task.focus();
        return;
      }
      const made = await api(wsPath(d.callee_id, '/delegate'), {
        method: 'POST', body: { task: text, idempotency_key: crypto.randomUUID() },
      });
      task.value = '';
      await open(made.delegation_id, d.callee_id);
      status.textContent = `Delegated to ${nameOf(d.callee_id)}: this is the new delegation.`;
    });
  });

  close.addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => {
    shown = null;
    follow?.abort();
    follow = null;
  });
  bus.addEventListener('open-thread', (e) => open(e.detail.did, e.detail.party));
}
