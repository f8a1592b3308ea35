// The attention inbox: one view across the workspaces of what waits on the
// operator — chats with unread messages (with "Mark all read"),
// delegations that failed in the last day or are stuck, and approval
// requests pending. Opened from the workspace list's "Attention" button,
// whose count is the sum.
//
// It is live on the streams the page already follows: unread counts move
// with the fleet's stream (unread.js says so on the bus as `activity`),
// approvals with the approvals stream (approvals.js: `approvals`). The
// ledger is read when the list is (every refresh) and, while the inbox is
// open, followed on GET /admin/delegations/events, so that a failure shows
// as it happens without a fourth stream held open all day.

import { api, errorOf } from './api.js';
import { pendingApprovals } from './approvals.js';
import { $, ago, el, sleep } from './dom.js';
import { bus, serverNow, state } from './state.js';
import { readEventStream } from './stream.js';
import { markAllRead, unreadCounts } from './unread.js';

const DAY_MS = 24 * 3600 * 1000;
const LEDGER_PAGE = 50;
const LEDGER_EVERY_MS = 15_000;

/** Failed (in the last day) and stuck delegations, newest first. */
let troubled = [];
let follow = null; // AbortController of the ledger stream while open

const badge = el('span', { class: 'abadge', id: 'attention-count', hidden: true }, '0');
const count = el('span', { class: 'visually-hidden' }, '');
const unreadList = el('ul', { class: 'attention-list', id: 'attention-unread', 'aria-labelledby': 'attention-unread-title' });
const delegationList = el('ul', { class: 'attention-list', id: 'attention-delegations', 'aria-labelledby': 'attention-delegations-title' });
const approvalList = el('ul', { class: 'attention-list', id: 'attention-approvals', 'aria-labelledby': 'attention-approvals-title' });
const error = el('p', { class: 'error', role: 'alert' });
const status = el('p', { class: 'visually-hidden', role: 'status' });
let dialog = null;

const nameOf = (id) => state.workspaces.find((w) => w.id === id)?.name || String(id).slice(0, 8);

const empty = (text) => el('li', { class: 'hint attention-empty' }, text);

/** A link that opens `hash` in place (the inbox closes). */
function go(hash, ...children) {
  return el('a', { href: hash, onclick: () => dialog?.close() }, ...children);
}

function paint() {
  const unread = unreadCounts();
  const approvals = pendingApprovals();
  const total = unread.length + troubled.length + approvals.length;
  badge.textContent = String(total);
  badge.hidden = total === 0;
  count.textContent = total ? ` ${total} waiting` : '';
  if (!dialog?.open) return;
  unreadList.replaceChildren(...(unread.length
    ? unread.map(({ ws, unread: n }) => el('li', { dataset: { ws: ws.id } },
      go(`#/w/${ws.id}`, ws.name), el('span', { class: 'hint' }, ` ${n} unread`)))
    : [empty('Every chat is read.')]));
  $('attention-mark-all').hidden = unread.length === 0;
  delegationList.replaceChildren(...(troubled.length
    ? troubled.map((d) => el('li', { dataset: { did: d.id } },
      el('span', { class: `dchip dchip-${d.status}` }, d.status), ' ',
      go(`#/w/${d.callee_id}/delegations/${d.id}`, `${nameOf(d.caller_id)} → ${nameOf(d.callee_id)}`),
      el('span', { class: 'hint' }, ` · ${d.task_preview} · ${ago(d.updated_at, serverNow())}`)))
    : [empty('No delegation failed today or is stuck.')]));
  approvalList.replaceChildren(...(approvals.length
    ? approvals.map((a) => el('li', { dataset: { aid: a.id } },
      el('button', { type: 'button', class: 'link', onclick: openApprovals }, `${nameOf(a.workspace_id)} asks`),
      el('span', { class: 'hint' }, ` · ${a.action}`)))
    : [empty('Nothing is waiting for a decision.')]));
}

function openApprovals() {
  dialog.close();
  $('open-approvals')?.click();
}

/** Whether a ledger row wants the operator: stuck, or failed in the last day. */
const wants = (d) => d.status === 'stuck'
  || (d.status === 'failed' && serverNow() - Date.parse(d.updated_at) < DAY_MS);

async function readLedger() {
  try {
    const [failed, stuck] = await Promise.all(['failed', 'stuck'].map((s) => api(`/admin/delegations?status=${s}&limit=${LEDGER_PAGE}`)));
    troubled = [...stuck, ...failed].filter(wants).sort((a, b) => b.updated_at.localeCompare(a.updated_at));
    error.textContent = '';
  } catch (e) {
    if (e.status === 403) troubled = [];
    else error.textContent = `Could not read the ledger: ${e.message}`;
  }
  paint();
}

/** One move of the ledger's fleet stream: in or out of the list. */
async function applyMove(move) {
  const id = move.delegation_id || move.id;
  if (!id) return;
  troubled = troubled.filter((d) => d.id !== id);
  if (move.status === 'failed' || move.status === 'stuck') {
    try {
      const d = await api(`/workspaces/${encodeURIComponent(move.callee_id)}/delegations/${encodeURIComponent(id)}`);
      if (wants(d)) troubled = [d, ...troubled.filter((x) => x.id !== d.id)];
    } catch {
      await readLedger();
      return;
    }
  }
  paint();
}

/** Follows the ledger's moves while the inbox is open. */
async function followLedger(signal) {
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      const res = await fetch('/admin/delegations/events', {
        headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal,
      });
      if (!res.ok) throw await errorOf(res);
      backoff = 1000;
      await readLedger(); // whatever moved before the stream was up
      await readEventStream(res.body, signal, ({ event, data }) => {
        if (event === 'resync') readLedger();
        if (event !== 'delegation') return;
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

function open() {
  dialog.showModal();
  paint();
  follow?.abort();
  follow = new AbortController();
  followLedger(follow.signal);
  $('attention-heading').focus();
}

/** Builds the inbox and its button; called once at start. */
export function initAttention() {
  dialog = el('dialog', { id: 'attention-dialog', class: 'panel-dialog', 'aria-labelledby': 'attention-heading' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'attention-heading', tabindex: '-1' }, 'Attention'),
      el('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Close')),
    el('p', { class: 'hint' }, 'What waits on you across every workspace. It follows the server live.'),
    error, status,
    el('div', { class: 'attention-head' },
      el('h3', { id: 'attention-unread-title', class: 'panel-subtitle' }, 'Unread chats'),
      el('button', {
        type: 'button',
        id: 'attention-mark-all',
        onclick: async () => {
          try {
            await markAllRead();
            status.textContent = 'Every chat is marked read.';
            $('attention-heading').focus();
          } catch (e) {
            error.textContent = `Could not mark all read: ${e.message}`;
          }
        },
      }, 'Mark all read')),
    unreadList,
    el('h3', { id: 'attention-delegations-title', class: 'panel-subtitle' }, 'Delegations that failed today or are stuck'),
    delegationList,
    el('h3', { id: 'attention-approvals-title', class: 'panel-subtitle' }, 'Approvals waiting'),
    approvalList);
  dialog.addEventListener('close', () => {
    follow?.abort();
    follow = null;
    // Back to where the inbox was opened from, unless a link moved on.
    if (!location.hash.startsWith('#/w/')) $('open-attention')?.focus();
  });
  document.querySelector('main').append(dialog);
  const button = el('button', { type: 'button', id: 'open-attention', class: 'ghost', onclick: open },
    'Attention', ' ', badge, count);
  $('refresh').before(button);
  for (const name of ['activity', 'approvals']) bus.addEventListener(name, paint);
  // The ledger with the list (its 20 s timer), not on every redraw.
  let ledgerAt = 0;
  bus.addEventListener('workspaces', () => {
    if (Date.now() - ledgerAt < LEDGER_EVERY_MS) return;
    ledgerAt = Date.now();
    readLedger();
  });
}
