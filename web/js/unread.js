// Unread counts, the tab title and optional browser notifications.
//
// The list API carries no per-workspace activity summary, so after each
// read of the list the page asks every workspace for the rows after the
// last one it knows (`since_id`: an empty answer when nothing happened)
// and counts the agent's messages newer than the last one the operator
// saw. What was seen is kept in localStorage, per workspace.

import { api, wsPath } from './api.js';
import { renderMarkdown } from './markdown.js';
import { bus, state } from './state.js';

const SEEN_KEY = 'molecule.seen';
const NOTIFY_KEY = 'molecule.notify';
const PAGE = 500;
const FIRST_PAGES = 4; // a workspace never looked at: its first 2000 rows at most
const BASE_TITLE = 'molecule canvas';

/** wsId -> { known: newest id fetched, latestAt: its time, unread, first: true until read once } */
const activity = new Map();
let seen = {};
try {
  seen = JSON.parse(localStorage.getItem(SEEN_KEY) || '{}') || {};
} catch {
  seen = {};
}

/** Whether a row is the agent speaking to the operator. */
export function isFromAgent(row) {
  return row.activity_type === 'agent_message'
    || (row.activity_type === 'a2a_receive' && row.method === 'message/send' && Boolean(row.response_body));
}

/** Unread agent messages of a workspace (0 while its chat is open). */
export const unreadOf = (id) => (state.current?.id === id ? 0 : activity.get(id)?.unread || 0);

/** Time of the workspace's newest row as far as the page knows, or ''. */
export const latestAt = (id) => activity.get(id)?.latestAt || '';

/** The operator has seen `wsId` up to activity id `id`. */
export function markSeen(wsId, id) {
  if ((seen[wsId] || 0) >= id) return;
  seen[wsId] = id;
  localStorage.setItem(SEEN_KEY, JSON.stringify(seen));
  const a = activity.get(wsId);
  if (a) {
    a.unread = 0;
    a.known = Math.max(a.known, id);
  }
  paintTitle();
}

/** A row of the open chat arrived on its stream. */
export function noteLiveRow(ws, row) {
  const a = entry(ws.id);
  a.known = Math.max(a.known, row.id);
  a.latestAt = row.created_at;
  if (document.visibilityState === 'visible') markSeen(ws.id, row.id);
  else if (isFromAgent(row)) notify(ws, row);
}

function entry(id) {
  if (!activity.has(id)) activity.set(id, { known: 0, latestAt: '', unread: 0, first: true });
  return activity.get(id);
}

/** Asks every workspace for what is new; then redraws counts and title. */
export async function pollActivity() {
  const ids = new Set(state.workspaces.map((w) => w.id));
  for (const id of activity.keys()) if (!ids.has(id)) activity.delete(id);
  const list = document.getElementById('workspace-list');
  list.setAttribute('aria-busy', 'true');
  await Promise.all(state.workspaces.map(async (ws) => {
    const a = entry(ws.id);
    const pages = a.first ? FIRST_PAGES : 1;
    try {
      for (let p = 0; p < pages; p += 1) {
        const rows = await api(wsPath(ws.id, `/activity?limit=${PAGE}&since_id=${a.known}`));
        for (const row of rows) {
          a.known = Math.max(a.known, row.id);
          a.latestAt = row.created_at;
          if (isFromAgent(row) && row.id > (seen[ws.id] || 0) && state.current?.id !== ws.id) {
            a.unread += 1;
            if (!a.first) notify(ws, row);
          }
        }
        if (rows.length < PAGE) break;
      }
      a.first = false;
    } catch {
      // One workspace failing (deleted meanwhile) leaves the others counted.
    }
  }));
  list.removeAttribute('aria-busy');
  bus.dispatchEvent(new Event('activity'));
  paintTitle();
}

function paintTitle() {
  let total = 0;
  for (const ws of state.workspaces) total += unreadOf(ws.id);
  document.title = total ? `(${total}) ${BASE_TITLE}` : BASE_TITLE;
}

/** Whether the operator turned notifications on (and the browser allows them). */
export const notifying = () => localStorage.getItem(NOTIFY_KEY) === 'on'
  && typeof Notification !== 'undefined' && Notification.permission === 'granted';

/** A message as a notification shows it: its Markdown read as plain text, on one line. */
function plainText(markdown) {
  const holder = document.createElement('div');
  holder.append(renderMarkdown(markdown));
  const blocks = holder.children.length ? [...holder.children] : [holder];
  return blocks.map((b) => b.textContent).join(' ').replace(/\s+/g, ' ').trim();
}

function notify(ws, row) {
  if (!notifying()) return;
  const text = plainText(row.data?.text ?? row.summary ?? '');
  try {
    const n = new Notification(ws.name, { body: text.slice(0, 200), tag: `molecule-${ws.id}-${row.id}` });
    n.onclick = () => {
      window.focus();
      location.hash = `#/w/${ws.id}`;
    };
  } catch {
    // Some browsers allow notifications only from a service worker.
  }
}

function paintNotifyButton(button) {
  const on = notifying();
  button.setAttribute('aria-pressed', String(on));
  button.textContent = on ? 'Notifications on' : 'Notify me';
  button.hidden = typeof Notification === 'undefined';
}

/** Wires the notifications toggle; called once at start. */
export function initUnread() {
  const button = document.getElementById('notify-toggle');
  paintNotifyButton(button);
  button.addEventListener('click', async () => {
    if (notifying()) {
      localStorage.removeItem(NOTIFY_KEY);
    } else {
      const answer = await Notification.requestPermission();
      if (answer === 'granted') localStorage.setItem(NOTIFY_KEY, 'on');
      else document.getElementById('workspaces-error').textContent = 'The browser refused notifications for this page.';
    }
    paintNotifyButton(button);
  });
  // Coming back to the tab: what the open chat shows is now seen.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.current) markSeen(state.current.id, state.lastId);
  });
}
