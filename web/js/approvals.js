// Approvals: the operator's approvals inbox and a workspace's own view.
//
// The inbox is a top-bar button with the number of pending requests and a
// dialog listing them, every workspace's, oldest first: who asks, the
// action, the reason, the context (readable JSON, or Markdown when it is
// text), how long ago it was asked and when it expires (and what happens
// then); Approve or Deny, with an optional note. It is live without
// polling: GET /approvals/pending once on sign-in and after every
// (re)connect or `resync`, then GET /approvals/events, whose `approval`
// event says a request was made, escalated or decided. A request made or
// escalated is read and drawn (and, when the operator turned browser
// notifications on, announced by one); a decided one leaves the list at
// once, whoever decided it. A decide that loses a race (409) says who won.
//
// A workspace's Approvals tab lists its own requests (every status,
// newest first) and those it may decide as a parent, from its event
// stream (chat.js relays its `approval` events on the bus).

import { api, errorOf, unauthorized, wsPath } from './api.js';
import { ago, el, sleep } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { bus, serverNow, state } from './state.js';
import { readEventStream } from './stream.js';
import { registerTab } from './tabs.js';
import { notifying } from './unread.js';

const THEN = { deny: 'denied', approve: 'approved', escalate: 'escalated' };

let nextId = 0; // unique ids for the note fields of the rows drawn

function nameOf(id) {
  if (!id) return 'the operator';
  return state.workspaces.find((w) => w.id === id)?.name || id.slice(0, 8);
}

/** "in 5 min" for a future time, "5 min ago" for a past one. */
function relative(iso) {
  const ms = Date.parse(iso) - serverNow();
  if (ms <= 0) return ago(iso, serverNow());
  const s = Math.round(ms / 1000);
  if (s < 60) return `in ${s} s`;
  if (s < 7200) return `in ${Math.round(s / 60)} min`;
  if (s < 86400) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

function timing(a) {
  const parts = [`asked ${ago(a.created_at, serverNow())}`];
  if (a.status !== 'pending') {
    parts.push(`${a.status} by ${a.decided_by === 'operator' || a.decided_by === 'expired' ? a.decided_by : nameOf(a.decided_by)} ${ago(a.decided_at, serverNow())}`);
  } else if (a.expires_at) {
    parts.push(`expires ${relative(a.expires_at)}, then ${THEN[a.on_expiry] || a.on_expiry}`);
  } else {
    parts.push('no expiry');
  }
  return parts.join(' · ');
}

/** The context as people read it: text as Markdown, anything else as indented JSON. */
function contextView(context) {
  const body = typeof context === 'string'
    ? el('div', { class: 'acontext text' }, renderMarkdown(context))
    : el('pre', { class: 'acontext' }, JSON.stringify(context, null, 2));
  return el('details', { class: 'acontext-box' }, el('summary', {}, 'Context'), body);
}

/**
 * One request as a list item; `onDecided(a, row)` after a decision this
 * page made (or found already made) for a pending one with controls.
 */
function renderApproval(a, { controls, onDecided }) {
  const li = el('li', { class: 'approval', dataset: { aid: a.id, status: a.status } });
  li.approval = a;
  const who = el('span', { class: 'aparties' }, `${nameOf(a.workspace_id)} asks`);
  const head = el('div', { class: 'dhead' },
    el('span', { class: `achip achip-${a.status}` }, a.status), who);
  if (a.status === 'pending') head.append(el('span', { class: 'hint' }, `decided by ${nameOf(a.approver_id)}${a.approver_id ? ' or the operator' : ''}`));
  li.append(head, el('p', { class: 'aaction' }, a.action));
  if (a.reason) li.append(el('p', { class: 'areason' }, el('span', { class: 'dlabel' }, 'Why: '), a.reason));
  if (a.context !== null && a.context !== undefined) li.append(contextView(a.context));
  if (a.task_id) li.append(el('p', { class: 'hint' }, `Task ${a.task_id}`));
  if (a.note) li.append(el('p', { class: 'anote' }, el('span', { class: 'dlabel' }, 'Note: '), a.note));
  li.append(el('p', { class: 'hint atime' }, timing(a)));
  if (a.status !== 'pending' || !controls) return li;

  const noteId = `approval-note-${++nextId}`;
  const note = el('textarea', { id: noteId, rows: '2', maxlength: '8192', class: 'anote-input' });
  const error = el('p', { class: 'error', role: 'alert' });
  const decide = async (decision, button) => {
    for (const b of li.querySelectorAll('button')) b.disabled = true;
    error.textContent = '';
    try {
      const body = { decision };
      if (note.value.trim()) body.note = note.value.trim();
      const row = await api(wsPath(a.workspace_id, `/approvals/${encodeURIComponent(a.id)}/decide`), { method: 'POST', body });
      onDecided(row, `${decision === 'approved' ? 'Approved' : 'Denied'}: ${a.action}.`);
    } catch (e) {
      if (e.status === 409 || e.status === 404) {
        // Someone else decided first (or it is no longer ours to decide).
        onDecided(null, `Already decided elsewhere: ${e.message}`);
        return;
      }
      error.textContent = `Could not decide: ${e.message}`;
      for (const b of li.querySelectorAll('button')) b.disabled = false;
      button.focus();
    }
  };
  const approve = el('button', { type: 'button', class: 'primary' }, 'Approve');
  const deny = el('button', { type: 'button', class: 'danger' }, 'Deny');
  approve.addEventListener('click', () => decide('approved', approve));
  deny.addEventListener('click', () => decide('denied', deny));
  li.append(
    el('label', { for: noteId }, `Note to ${nameOf(a.workspace_id)} (optional)`),
    note,
    el('div', { class: 'aactions' }, approve, deny),
    error,
  );
  return li;
}

/** Keeps the relative times of `list`'s rows current. */
function keepTimes(list) {
  bus.addEventListener('tick', () => {
    for (const li of list.children) {
      const t = li.querySelector('.atime');
      const text = li.approval && timing(li.approval);
      if (t && text && t.textContent !== text) t.textContent = text;
    }
  });
}

// ------------------------------------------------------------ the inbox

const pending = new Map(); // approval id -> request, the fleet's pending ones
let follow = null; // AbortController of the event stream while signed in
let loaded = false;

const badge = el('span', { class: 'abadge', id: 'approvals-count', hidden: true }, '0');
const list = el('ul', { class: 'approval-list', id: 'approvals-list', 'aria-labelledby': 'approvals-heading' });
const empty = el('p', { class: 'hint', id: 'approvals-empty' }, 'Nothing is waiting for a decision.');
const error = el('p', { class: 'error', role: 'alert' });
const announce = el('p', { class: 'visually-hidden', role: 'status' });

/** The fleet's pending requests, oldest first (the attention inbox). */
export const pendingApprovals = () => [...pending.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));

function paintCount() {
  bus.dispatchEvent(new Event('approvals'));
  badge.textContent = String(pending.size);
  badge.hidden = pending.size === 0;
  badge.nextSibling.textContent = pending.size === 0 ? '' : ' pending';
  empty.hidden = pending.size !== 0;
}

function drawn(id) {
  return list.querySelector(`[data-aid="${CSS.escape(id)}"]`);
}

function rowOf(a) {
  return renderApproval(a, { controls: true, onDecided: (_, message) => { drop(a.id); announce.textContent = message; } });
}

/** Adds or redraws a pending request, in the list's oldest-first order. */
function put(a) {
  const known = pending.has(a.id);
  pending.set(a.id, a);
  const item = rowOf(a);
  const old = drawn(a.id);
  if (old) {
    // A row being written in keeps its note.
    const note = old.querySelector('textarea')?.value;
    if (note) item.querySelector('textarea').value = note;
    old.replaceWith(item);
  } else {
    const after = [...list.children].find((li) => li.approval.created_at > a.created_at);
    list.insertBefore(item, after || null);
  }
  paintCount();
  return !known;
}

/** A request is decided: out of the list at once. */
function drop(id) {
  pending.delete(id);
  drawn(id)?.remove();
  paintCount();
}

async function reload() {
  try {
    const rows = await api('/approvals/pending');
    pending.clear();
    list.replaceChildren();
    for (const a of rows) put(a);
    loaded = true;
    error.textContent = '';
    paintCount();
  } catch (e) {
    error.textContent = `Could not list the approvals: ${e.message}`;
  }
}

function notifyRequest(a) {
  if (!notifying()) return;
  try {
    const n = new Notification(`${nameOf(a.workspace_id)} asks for approval`, { body: a.action.slice(0, 200), tag: `molecule-approval-${a.id}` });
    n.onclick = () => {
      window.focus();
      document.getElementById('open-approvals')?.click();
    };
  } catch {
    // Some browsers allow notifications only from a service worker.
  }
}

/** One `approval` event of the fleet's stream. */
async function applyMove(move) {
  if (move.status !== 'pending') {
    drop(move.approval_id);
    return;
  }
  let a;
  try {
    a = await api(wsPath(move.workspace_id, `/approvals/${encodeURIComponent(move.approval_id)}`));
  } catch {
    return; // gone meanwhile (its workspace removed)
  }
  if (a.status !== 'pending') drop(a.id);
  else if (put(a) && loaded) notifyRequest(a);
}

/** Follows GET /approvals/events until `signal` aborts, re-reading the list on each (re)connect. */
async function followApprovals(signal) {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      const res = await fetch('/approvals/events', {
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
      await reload(); // whatever moved while we were away
      await readEventStream(res.body, signal, ({ event, data }) => {
        if (event === 'resync') reload();
        if (event !== 'approval') return;
        try {
          applyMove(JSON.parse(data));
        } catch {
          // not JSON: ignore
        }
      });
    } catch {
      if (signal.aborted) return;
    }
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 30_000);
  }
}

/** Starts following the fleet's approvals (on each sign-in). */
export function startApprovals() {
  follow?.abort();
  follow = new AbortController();
  loaded = false;
  followApprovals(follow.signal);
}

/** Stops following and forgets the list (sign-out). */
export function stopApprovals() {
  follow?.abort();
  follow = null;
  pending.clear();
  list.replaceChildren();
  paintCount();
}

// ------------------------------------------------------------ a workspace's tab

function workspaceTab() {
  let ws = null;
  const own = el('ul', { class: 'approval-list', id: 'ws-approvals-own', 'aria-labelledby': 'ws-approvals-own-title' });
  const ownEmpty = el('p', { class: 'hint' }, 'It has not asked for any approval.');
  const theirs = el('ul', { class: 'approval-list', id: 'ws-approvals-theirs', 'aria-labelledby': 'ws-approvals-theirs-title' });
  const theirsEmpty = el('p', { class: 'hint' }, 'Nothing of its children waits on it.');
  const tabError = el('p', { class: 'error', role: 'alert' });
  const tabAnnounce = el('p', { class: 'visually-hidden', role: 'status' });
  const theirsTitle = el('h4', { id: 'ws-approvals-theirs-title', class: 'panel-subtitle' }, 'Waiting on it');
  const title = el('h3', { id: 'ws-approvals-title', class: 'panel-title' }, 'Approvals');
  const root = el('section', { class: 'panel approvals', 'aria-labelledby': 'ws-approvals-title' },
    title, tabError, tabAnnounce,
    el('h4', { id: 'ws-approvals-own-title', class: 'panel-subtitle' }, 'Its requests, newest first'), own, ownEmpty,
    theirsTitle, theirs, theirsEmpty);
  keepTimes(own);
  keepTimes(theirs);

  const decided = (_, message) => {
    tabAnnounce.textContent = message;
    load();
  };

  async function load() {
    if (!ws) return;
    const at = ws;
    try {
      const [mine, waiting] = await Promise.all([
        api(wsPath(at.id, '/approvals')),
        api(wsPath(at.id, '/approvals?role=decider')),
      ]);
      if (at !== ws) return;
      tabError.textContent = '';
      own.replaceChildren(...mine.map((a) => renderApproval(a, { controls: true, onDecided: decided })));
      ownEmpty.hidden = mine.length !== 0;
      theirs.replaceChildren(...waiting.map((a) => renderApproval(a, { controls: true, onDecided: decided })));
      theirsEmpty.hidden = waiting.length !== 0;
    } catch (e) {
      if (at === ws) tabError.textContent = `Could not list the approvals: ${e.message}`;
    }
  }

  registerTab('approvals', 'Approvals', el('div', { id: 'approvals-panel' }, root), {
    show: (w) => {
      ws = w;
      title.textContent = `Approvals of ${w.name}`;
      own.replaceChildren();
      theirs.replaceChildren();
      load();
    },
    hide: () => { ws = null; },
  });
  const drawnIn = (id) => Boolean(root.querySelector(`[data-aid="${CSS.escape(id)}"]`));
  bus.addEventListener('stream', (e) => {
    if (!ws) return;
    const { event, payload } = e.detail;
    if (event === 'resync') load();
    else if (event === 'approval' && (payload.workspace_id === ws.id || payload.approver_id === ws.id || drawnIn(payload.approval_id))) load();
  });
}

/** A check mark in a circle, drawn in the text's colour. */
function icon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'aicon');
  const circle = document.createElementNS(ns, 'circle');
  for (const [k, v] of Object.entries({ cx: 12, cy: 12, r: 9 })) circle.setAttribute(k, v);
  const tick = document.createElementNS(ns, 'path');
  tick.setAttribute('d', 'M7.5 12.5l3 3 6-6.5');
  svg.append(circle, tick);
  return svg;
}

/** The inbox dialog and the workspace tab; returns the top bar's button. */
export function initApprovals() {
  keepTimes(list);
  workspaceTab();
  const dialog = el('dialog', { id: 'approvals-dialog', class: 'panel-dialog', 'aria-labelledby': 'approvals-heading' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'approvals-heading' }, 'Approvals'),
      el('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Close')),
    el('p', { class: 'hint' }, 'Requests of every workspace waiting for a decision, oldest first.'),
    error, announce, list, empty);
  document.querySelector('main').append(dialog);
  // On a phone the word gives way to an icon (the top bar is one row);
  // the button's name stays "Approvals N pending".
  const button = el('button', { type: 'button', id: 'open-approvals', class: 'ghost', title: 'Approvals', onclick: () => dialog.showModal() },
    icon(), el('span', { class: 'alabel' }, 'Approvals'), ' ', badge, el('span', { class: 'visually-hidden' }, ''));
  paintCount();
  return button;
}
