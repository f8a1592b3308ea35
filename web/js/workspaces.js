// The workspace list: read from GET /workspaces, drawn as the team tree
// (tree.js) of links to each workspace's chat, refreshed on a timer and on
// demand; while filtering, the matches are listed flat. Each agent's status
// is judged by the page every second from its last contact (see
// agentStatus), so an agent that stops reads offline when its window ends,
// not at the next read of the list.

import { api } from './api.js';
import { $, ago, el } from './dom.js';
import { STATUS_LABEL, agentStatus, bus, serverNow, state } from './state.js';
import { drawTree, setFold } from './tree.js';
import { latestAt, pollActivity, unreadOf } from './unread.js';

const STATUS_TICK_MS = 1_000;

/** Re-reads the list and redraws it; throws the ApiError after showing it. */
export async function refreshWorkspaces() {
  try {
    state.workspaces = await api('/workspaces');
    $('workspaces-error').textContent = '';
  } catch (e) {
    if (e.status !== 401) $('workspaces-error').textContent = `Could not load the workspaces: ${e.message}`;
    throw e;
  }
  renderWorkspaces();
  // Counts and order follow a moment later; the list is usable at once.
  pollActivity().catch(() => {});
}

/** Newest activity first (then newest workspace): where the talk is. */
function byLatestActivity(a, b) {
  const ka = latestAt(a.id) || a.created_at;
  const kb = latestAt(b.id) || b.created_at;
  return kb.localeCompare(ka);
}

/** "last contact 3 s ago", or '' when there never was any. */
export function lastContact(ws) {
  return ws.last_heartbeat_at ? `last contact ${ago(ws.last_heartbeat_at, serverNow())}` : '';
}

/** Sets a node's text only when it changed (no needless screen-reader chatter). */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Brings one list entry's status and last contact up to now. */
function paintStatus(link, ws) {
  const status = agentStatus(ws);
  const badge = link.querySelector('.status');
  badge.className = `status status-${status}`;
  setText(badge, STATUS_LABEL[status] || status);
  const contact = link.querySelector('.contact');
  setText(contact, lastContact(ws));
  if (ws.last_heartbeat_at) contact.title = new Date(ws.last_heartbeat_at).toLocaleString();
  // The compact row shows the name (cut to its width), unread and status;
  // the whole name, the mode and the last contact are its tooltip.
  const title = [ws.name, `${ws.delivery_mode} mode`, STATUS_LABEL[status] || status, lastContact(ws)].filter(Boolean).join(' · ');
  if (link.title !== title) link.title = title;
}

/** One workspace's entry: its link, with unread count, mode, status, tier. */
function entry(ws, { under = '' } = {}) {
  const unread = unreadOf(ws.id);
  const link = el('a', {
    href: `#/w/${ws.id}`,
    class: 'workspace',
    dataset: { ws: ws.id },
    'aria-current': state.current?.id === ws.id ? 'page' : null,
  },
  el('span', { class: 'ws-name' }, el('span', { class: 'ws-label' }, ws.name),
    unread ? el('span', { class: 'unread', 'aria-label': `${unread} unread` }, unread > 99 ? '99+' : String(unread)) : null),
  under ? el('span', { class: 'hint ws-under' }, `in ${under}`) : null,
  el('span', { class: 'ws-meta' },
    el('span', { class: `mode mode-${ws.delivery_mode}` }, ws.delivery_mode),
    el('span', { class: 'status' }),
    ws.tier ? el('span', { class: 'tier' }, `tier ${ws.tier}`) : null,
    el('span', { class: 'hint contact' })));
  paintStatus(link, ws);
  return link;
}

/** Draws `state.workspaces`, keeping the keyboard focus where it was. */
export function renderWorkspaces() {
  const list = $('workspace-list');
  const active = document.activeElement;
  const focusedId = active?.closest?.('[data-ws]')?.dataset.ws;
  const focusedFold = active?.dataset?.fold;
  const filter = $('ws-filter').value.trim().toLowerCase();
  let matches = state.workspaces.length;
  if (filter) {
    // Matches anywhere in the tree, flat, each saying which team it is in.
    const names = new Map(state.workspaces.map((w) => [w.id, w.name]));
    const shown = state.workspaces
      .filter((ws) => ws.name.toLowerCase().includes(filter))
      .sort(byLatestActivity);
    matches = shown.length;
    list.replaceChildren(...shown.map((ws) => el('li', {}, entry(ws, { under: names.get(ws.parent_id) || '' }))));
  } else {
    list.replaceChildren(...drawTree(state.workspaces, byLatestActivity, (ws) => entry(ws)));
  }
  $('workspaces-empty').hidden = state.workspaces.length > 0;
  $('workspaces-nomatch').hidden = state.workspaces.length === 0 || matches > 0;
  // With no workspace yet, the form is what there is to do.
  if (state.workspaces.length === 0) $('create-details').open = true;
  if (focusedId) list.querySelector(`[data-ws="${CSS.escape(focusedId)}"]`)?.focus();
  if (focusedFold) list.querySelector(`[data-fold="${CSS.escape(focusedFold)}"]`)?.focus();
  bus.dispatchEvent(new Event('workspaces'));
}

/** A fold button was pressed: fold or unfold that team, kept by the server. */
async function onFold(button) {
  const ws = state.workspaces.find((w) => w.id === button.dataset.fold);
  if (!ws) return;
  const fold = setFold(ws, !ws.collapsed);
  renderWorkspaces();
  try {
    await fold;
    $('workspaces-error').textContent = '';
  } catch (e) {
    $('workspaces-error').textContent = `Could not ${ws.collapsed ? 'unfold' : 'fold'} ${ws.name}'s team: ${e.message}`;
  }
  renderWorkspaces();
}

/** Re-judges every status against the clock (no request). */
function tick() {
  for (const ws of state.workspaces) {
    const link = $('workspace-list').querySelector(`[data-ws="${CSS.escape(ws.id)}"]`);
    if (link) paintStatus(link, ws);
  }
  bus.dispatchEvent(new Event('tick'));
}

/** Arrow keys, Home and End move between the list's workspaces (Enter opens one). */
function onListKey(e) {
  const step = { ArrowDown: 1, ArrowUp: -1, Home: -Infinity, End: Infinity }[e.key];
  if (step === undefined || e.altKey || e.ctrlKey || e.metaKey) return;
  const links = [...$('workspace-list').querySelectorAll('a[data-ws]')];
  if (links.length === 0) return;
  const at = links.indexOf(document.activeElement?.closest?.('a[data-ws]'));
  const to = Math.max(0, Math.min(links.length - 1, (at < 0 && step > 0 ? -1 : at) + step));
  e.preventDefault();
  links[to].focus();
}

/** Wires the Refresh button and the status clock; called once at start. */
export function initWorkspaces() {
  $('refresh').addEventListener('click', () => refreshWorkspaces().catch(() => {}));
  $('ws-filter').addEventListener('input', () => renderWorkspaces());
  $('workspace-list').addEventListener('click', (e) => {
    const button = e.target.closest('[data-fold]');
    if (button) onFold(button);
  });
  $('workspace-list').addEventListener('keydown', onListKey);
  $('ws-filter').addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowDown') return;
    const first = $('workspace-list').querySelector('a[data-ws]');
    if (first) { e.preventDefault(); first.focus(); }
  });
  bus.addEventListener('activity', () => renderWorkspaces());
  clearInterval(state.statusTimer);
  state.statusTimer = setInterval(tick, STATUS_TICK_MS);
}
