// The workspace list: read from GET /workspaces, drawn as the team tree
// (tree.js) of links to each workspace's chat, refreshed on a timer and on
// demand; while filtering, the matches are listed flat. Each agent's status
// is judged by the page every second from its last contact (see
// agentStatus), so an agent that stops reads offline when its window ends,
// not at the next read of the list.
//
// Virtualised: the list is laid out as rows once per change (no DOM), and
// only the rows in view and a margin are in the DOM, whatever the fleet's
// size; scrolling draws the window anew (spacers above and below keep the
// scrollbar true). Arrow keys, Home and End walk every row, drawing it
// first; the status clock repaints only the rows drawn.

import { api } from './api.js';
import { $, ago, dateFormat, el } from './dom.js';
import { STATUS_LABEL, agentStatus, bus, serverNow, state } from './state.js';
import { drawWindow, layOut, setFold } from './tree.js';
import { latestAt, latestChanges, pollActivity, unreadOf } from './unread.js';

const STATUS_TICK_MS = 1_000;
// Rows drawn beyond the view on each side; the window is drawn anew when
// the view comes within EDGE rows of its end.
const MARGIN = 20;
const EDGE = 6;
// A row's height with its gap until one is measured (px).
const ROW_GUESS = 64;
const FULL = dateFormat({ dateStyle: 'medium', timeStyle: 'medium' });

/**
 * The list as laid out: its rows (tree.js's layOut, or the filter's
 * matches), each workspace's row index, and the window drawn.
 */
const view = {
  rows: [],
  at: new Map(),
  byId: new Map(),
  from: 0,
  to: 0,
  pitch: ROW_GUESS,
  measured: false,
  laidOutAt: -1, // unread.js's latestChanges() when laid out
  inView: [0, Math.ceil(window.innerHeight / ROW_GUESS)], // rows [first, last) in view, as last read
};

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

/**
 * The workspaces in the list's order: newest activity first (then newest
 * workspace), where the talk is. One sort of indices over keys read once
 * (a number per workspace, no lookup per comparison): at 10,000 workspaces
 * the comparisons were most of the list's layout.
 */
function byLatestActivity(workspaces) {
  const n = workspaces.length;
  const at = new Array(n);
  const ms = new Float64Array(n);
  for (let i = 0; i < n; i += 1) {
    const w = workspaces[i];
    at[i] = latestAt(w.id) || w.created_at;
    ms[i] = Date.parse(at[i]) || 0;
  }
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => ms[b] - ms[a] || (at[b] > at[a]) - (at[b] < at[a]));
  return order.map((i) => workspaces[i]);
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
  const cls = `status status-${status}`;
  if (badge.className !== cls) badge.className = cls;
  setText(badge, STATUS_LABEL[status] || status);
  const contact = link.querySelector('.contact');
  setText(contact, lastContact(ws));
  if (ws.last_heartbeat_at && contact.dataset.at !== ws.last_heartbeat_at) {
    contact.dataset.at = ws.last_heartbeat_at;
    contact.title = FULL.format(new Date(ws.last_heartbeat_at));
  }
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

/** Lays the list out as rows: the tree, or (while filtering) the matches, flat. */
function layOutList() {
  view.laidOutAt = latestChanges();
  const filter = $('ws-filter').value.trim().toLowerCase();
  const sorted = byLatestActivity(state.workspaces);
  if (filter) {
    // Matches anywhere in the tree, flat, each saying which team it is in.
    const names = new Map(state.workspaces.map((w) => [w.id, w.name]));
    view.rows = sorted
      .filter((ws) => ws.name.toLowerCase().includes(filter))
      .map((ws) => ({ ws, depth: 0, team: 0, open: false, up: -1, under: names.get(ws.parent_id) || '' }));
  } else {
    // Siblings keep the order they are given in.
    view.rows = layOut(sorted);
  }
  view.at = new Map(view.rows.map((r, i) => [r.ws.id, i]));
  view.byId = new Map(state.workspaces.map((w) => [w.id, w]));
  // Fold buttons take a column only when there is a team anywhere (not
  // only in the rows drawn), so that names line up as the window moves.
  $('workspace-list').classList.toggle('has-teams', view.rows.some((r) => r.team > 0));
}

/** The workspaces in list order (every row, drawn or not). */
export const listedIds = () => view.rows.map((r) => r.ws.id);

/** The rows [first, last) in view now, from the list's place in its pane. */
function rowsInView() {
  const lr = $('workspace-list').getBoundingClientRect();
  const sr = $('workspaces-pane').getBoundingClientRect();
  const top = Math.max(sr.top, 0) - lr.top;
  const bottom = Math.min(sr.bottom, window.innerHeight) - lr.top;
  const first = Math.max(0, Math.floor(top / view.pitch));
  return [first, Math.max(first + 1, Math.ceil(bottom / view.pitch))];
}

/** A row's height with its gap, from the rows drawn (kept when none are laid out). */
function measure(list) {
  const drawn = list.querySelectorAll('.tree-row');
  if (drawn.length < 2) return;
  const a = drawn[0].getBoundingClientRect().top;
  const b = drawn[drawn.length - 1].getBoundingClientRect().top;
  const pitch = (b - a) / (drawn.length - 1);
  if (pitch > 0) view.measured = true;
  if (pitch > 0 && Math.abs(pitch - view.pitch) > 0.5) {
    view.pitch = pitch;
    pad(list);
  }
}

/** Row `i`'s top on screen while it is drawn, else null. */
function rowTop(list, i) {
  return list.querySelector(`li[data-row="${i}"] > .tree-row`)?.getBoundingClientRect().top ?? null;
}

/** The spacers: the height of the rows not drawn, above and below. */
function pad(list) {
  list.style.paddingTop = `${Math.round(view.from * view.pitch)}px`;
  list.style.paddingBottom = `${Math.round((view.rows.length - view.to) * view.pitch)}px`;
}

/**
 * Draws the window of rows around the view: at once with `force` (the
 * rows changed), else only when the view nears the window's end. With
 * `fresh` the view is read from the layout (after a scroll, at a frame:
 * cheap then), the rows' height measured and the first row in view kept
 * where it was on screen; without, the view last read is used (no layout
 * forced into the task that changed the rows) and checked at the next
 * frame. Keeps the keyboard focus on the row (or fold button) it was on
 * while it is drawn.
 */
function paintWindow(force = false, fresh = !force) {
  const n = view.rows.length;
  if (fresh) view.inView = rowsInView();
  const [first, last] = view.inView;
  const inside = (first >= view.from + EDGE || view.from === 0) && (last <= view.to - EDGE || view.to >= n);
  const list = $('workspace-list');
  if (!force && fresh && view.from === 0 && view.to > 0 && !view.measured && n >= 2) {
    // The window drawn from the top is measured as it is, not drawn anew
    // for that; then checked against the view with the measured height.
    measure(list);
    if (view.measured) {
      paintWindow();
      return;
    }
  }
  if (!force && view.to > view.from && inside && (view.measured || n < 2)) return;
  const active = document.activeElement;
  const mine = list.contains(active) ? active : null;
  const focusedId = mine?.closest('[data-ws]')?.dataset.ws;
  const focusedFold = mine?.dataset?.fold;
  const anchor = fresh ? rowTop(list, first) : null;
  view.from = Math.max(0, Math.min(first, n) - MARGIN);
  view.to = Math.min(n, last + MARGIN);
  list.replaceChildren(...drawWindow(view.rows, view.from, view.to, entry));
  pad(list);
  if (fresh) {
    measure(list);
    const moved = anchor === null ? null : rowTop(list, first);
    if (moved !== null && Math.abs(moved - anchor) >= 1) $('workspaces-pane').scrollTop += moved - anchor;
  } else {
    later();
  }
  const back = (focusedId && list.querySelector(`[data-ws="${CSS.escape(focusedId)}"]`))
    || (focusedFold && list.querySelector(`[data-fold="${CSS.escape(focusedFold)}"]`));
  if (back) back.focus({ preventScroll: true });
  else if (mine) list.focus({ preventScroll: true }); // its row scrolled out of the window
}

/** Checks the window against the view at the next frame (once a frame). */
let frame = 0;
function later() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    paintWindow();
  });
}

/** Scrolls row `i` into the pane's view (drawing it). */
function scrollToRow(i) {
  const pane = $('workspaces-pane');
  const lr = $('workspace-list').getBoundingClientRect();
  const sr = pane.getBoundingClientRect();
  const top = lr.top - sr.top + pane.scrollTop + i * view.pitch;
  if (top < pane.scrollTop) pane.scrollTop = top;
  else if (top + view.pitch > pane.scrollTop + pane.clientHeight) pane.scrollTop = top + view.pitch - pane.clientHeight;
  paintWindow(i < view.from || i >= view.to, true);
}

/** Moves the focus to a workspace's row, scrolling it into view; false when not listed. */
export function focusRow(id) {
  const i = view.at.get(id);
  if (i === undefined) return false;
  scrollToRow(i);
  const link = $('workspace-list').querySelector(`a[data-ws="${CSS.escape(id)}"]`);
  link?.focus();
  return Boolean(link);
}

/** Draws `state.workspaces`, keeping the keyboard focus where it was. */
export function renderWorkspaces() {
  layOutList();
  paintWindow(true);
  const matches = view.rows.length;
  $('workspaces-empty').hidden = state.workspaces.length > 0;
  $('workspaces-nomatch').hidden = state.workspaces.length === 0 || matches > 0;
  // With no workspace yet, the form is what there is to do.
  if (state.workspaces.length === 0) $('create-details').open = true;
  bus.dispatchEvent(new Event('workspaces'));
}

/**
 * The open chat changed: its row says so (aria-current) and shows no
 * unread count, without laying the list out or drawing it anew (a chat
 * opens without redrawing a long list).
 */
export function markCurrent() {
  for (const link of $('workspace-list').querySelectorAll('a[data-ws]')) {
    if (link.dataset.ws !== state.current?.id) {
      link.removeAttribute('aria-current');
      continue;
    }
    link.setAttribute('aria-current', 'page');
    link.querySelector('.unread')?.remove();
  }
}

/** Whether two layouts list the same rows, in the same order and nesting. */
function sameRows(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) {
    const x = a[i];
    const y = b[i];
    if (x.ws !== y.ws || x.depth !== y.depth || x.team !== y.team || x.open !== y.open || x.up !== y.up || x.under !== y.under) return false;
  }
  return true;
}

/** Brings the drawn rows' unread badges up to the counts (no redraw). */
function paintUnread() {
  for (const link of $('workspace-list').querySelectorAll('a[data-ws]')) {
    const unread = unreadOf(link.dataset.ws);
    const badge = link.querySelector('.unread');
    if (!unread) {
      badge?.remove();
      continue;
    }
    const text = unread > 99 ? '99+' : String(unread);
    const label = `${unread} unread`;
    if (!badge) {
      link.querySelector('.ws-label').after(el('span', { class: 'unread', 'aria-label': label }, text));
      continue;
    }
    setText(badge, text);
    if (badge.getAttribute('aria-label') !== label) badge.setAttribute('aria-label', label);
  }
}

/**
 * The counts or the chats' latest times changed (activity): laid out
 * anew when a chat's newest time moved, and drawn again only when its rows
 * moved; otherwise only
 * the drawn rows' badges change, so that the read state and the counts
 * arriving at the start (a burst of them) cost no redraw of the window.
 */
function renderActivity() {
  if (view.laidOutAt === latestChanges()) {
    // No chat's newest time moved (the read state, counts): the order stands.
    paintUnread();
    return;
  }
  const before = view.rows;
  layOutList();
  if (!sameRows(before, view.rows)) {
    paintWindow(true);
    return;
  }
  paintUnread();
}

/** Follows the activity once at the next frame, however many changes come before it. */
let soon = 0;
function renderSoon() {
  if (soon) return;
  soon = requestAnimationFrame(() => {
    soon = 0;
    renderActivity();
  });
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

/** Re-judges the drawn rows' statuses against the clock (no request). */
function tick() {
  for (const link of $('workspace-list').querySelectorAll('a[data-ws]')) {
    const ws = view.byId.get(link.dataset.ws);
    if (ws) paintStatus(link, ws);
  }
  bus.dispatchEvent(new Event('tick'));
}

/** Arrow keys, Home and End move between the list's workspaces (Enter opens one). */
function onListKey(e) {
  const step = { ArrowDown: 1, ArrowUp: -1, Home: -Infinity, End: Infinity }[e.key];
  if (step === undefined || e.altKey || e.ctrlKey || e.metaKey) return;
  const n = view.rows.length;
  if (n === 0) return;
  const on = document.activeElement?.closest?.('a[data-ws]');
  let at = on ? view.at.get(on.dataset.ws) ?? -1 : -1;
  // On the list itself (its row scrolled away): from the first row in view.
  if (document.activeElement === $('workspace-list')) at = Math.min(n - 1, rowsInView()[0]) - (step > 0 ? 1 : 0);
  const to = Math.max(0, Math.min(n - 1, (at < 0 && step > 0 ? -1 : at) + step));
  e.preventDefault();
  focusRow(view.rows[to].ws.id);
}

/** Draws the window anew as the pane scrolls or changes size (once a frame). */
function followScroll() {
  $('workspaces-pane').addEventListener('scroll', later, { passive: true });
  window.addEventListener('resize', later);
  // Shown again (a phone back from a chat), or resized: the view moved.
  new ResizeObserver(later).observe($('workspaces-pane'));
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
    if (e.key !== 'ArrowDown' || view.rows.length === 0) return;
    e.preventDefault();
    focusRow(view.rows[0].ws.id);
  });
  followScroll();
  bus.addEventListener('activity', renderSoon);
  clearInterval(state.statusTimer);
  state.statusTimer = setInterval(tick, STATUS_TICK_MS);
}
