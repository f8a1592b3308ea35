// Unread counts, the tab title and optional browser notifications.
//
// The page asks the server's read state (one request, whatever the
// fleet's size: counts and each chat's newest row id) at the start, when
// the list is re-read and when the fleet's stream (GET
// /admin/activity/events) reconnects or says `resync`; it reads a
// workspace's rows after the last one it knows (`since_id`) only when
// that chat has rows it has not seen, or the stream says it has a new
// one: no request per workspace while nothing happens. It counts the
// agent's messages newer than the last one the operator saw.
// What was seen is kept by the server, per token (GET /admin/read-state,
// PUT /workspaces/:id/read-state), so two browsers agree: the fleet
// stream's `read` event says another page of this token read something,
// and "Mark all read" is one request (issue 30, defect 10).

import { api, errorOf, unauthorized, wsPath } from './api.js';
import { sleep } from './dom.js';
import { markdownReady, renderMarkdown } from './markdown.js';
import { bus, state } from './state.js';
import { readEventStream } from './stream.js';

const NOTIFY_KEY = 'molecule.notify';
const PAGE = 500;
const BASE_TITLE = 'molecule canvas';

/** wsId -> { known: newest id fetched, latestAt: its time, unread, first: true until read once } */
const activity = new Map();
/** wsId -> the newest activity id this token has seen there (the server's). */
let seen = {};
/** wsId -> the newest row id the server's unread count took in (not counted again). */
const counted = new Map();

/** Whether a row is the agent speaking to the operator. */
export function isFromAgent(row) {
  return row.activity_type === 'agent_message'
    || (row.activity_type === 'a2a_receive' && row.method === 'message/send' && Boolean(row.response_body));
}

/** Unread agent messages of a workspace (0 while its chat is open). */
export const unreadOf = (id) => (state.current?.id === id ? 0 : activity.get(id)?.unread || 0);

/** Time of the workspace's newest row as far as the page knows, or ''. */
export const latestAt = (id) => activity.get(id)?.latestAt || '';

/** How many times a chat's newest time changed: the list's order may have moved since it last read this. */
let latestVersion = 0;
export const latestChanges = () => latestVersion;

/** A chat's newest row is at `at`: kept, and the list told when that is news. */
function setLatest(a, at) {
  if (a.latestAt === at) return;
  a.latestAt = at;
  latestVersion += 1;
}

/** The operator has seen `wsId` up to activity id `id`: kept by the server. */
export function markSeen(wsId, id) {
  if (!id || (seen[wsId] || 0) >= id) return;
  seen[wsId] = id;
  const a = activity.get(wsId);
  if (a) {
    a.unread = 0;
    a.known = Math.max(a.known, id);
  }
  paintTitle();
  api(wsPath(wsId, '/read-state'), { method: 'PUT', body: { last_read_id: id } }).catch(() => {
    // Not kept (deleted meanwhile, server down): the next read of the
    // server's state shows what it has.
  });
}

/**
 * The server's read state of this token: what was seen, the unread counts
 * from it (the open chat's excepted), and each chat's newest row id.
 * Replaces what the page counted itself, which may be behind another
 * page's reading. Returns the newest ids, by workspace.
 */
async function readState() {
  const rows = await api('/admin/read-state');
  seen = {};
  const newest = new Map();
  for (const r of rows) {
    seen[r.workspace_id] = r.last_read_id;
    newest.set(r.workspace_id, r.newest_id);
    counted.set(r.workspace_id, r.newest_id);
    const a = entry(r.workspace_id);
    a.unread = state.current?.id === r.workspace_id ? 0 : r.unread;
  }
  bus.dispatchEvent(new Event('activity'));
  paintTitle();
  return newest;
}

/** Marks every chat read, for this token, in one request. */
export async function markAllRead() {
  const rows = await api('/admin/read-state/mark-all', { method: 'POST' });
  seen = {};
  for (const r of rows) {
    seen[r.workspace_id] = r.last_read_id;
    entry(r.workspace_id).unread = r.unread;
  }
  bus.dispatchEvent(new Event('activity'));
  paintTitle();
}

/** Unread counts of every workspace, for views across them (attention.js). */
export const unreadCounts = () => state.workspaces
  .map((ws) => ({ ws, unread: unreadOf(ws.id) }))
  .filter((x) => x.unread > 0);

/** A row of the open chat arrived on its stream. */
export function noteLiveRow(ws, row) {
  const a = entry(ws.id);
  a.known = Math.max(a.known, row.id);
  setLatest(a, row.created_at);
  if (document.visibilityState === 'visible') markSeen(ws.id, row.id);
  else if (isFromAgent(row)) notify(ws, row);
}

function entry(id) {
  if (!activity.has(id)) activity.set(id, { known: 0, latestAt: '', unread: 0, first: true });
  return activity.get(id);
}

/** Reads of a workspace in flight, and those asked again meanwhile. */
const inflight = new Map();
const again = new Set();

/**
 * Reads what is new in one workspace: its rows after the last one known.
 * One read at a time per workspace (two at once would count a row twice);
 * asked again meanwhile, it reads once more when the first is done.
 */
function readNew(ws) {
  if (inflight.has(ws.id)) {
    again.add(ws.id);
    return inflight.get(ws.id);
  }
  const reading = (async () => {
    try {
      do {
        again.delete(ws.id);
        await readOnce(ws);
      } while (again.has(ws.id));
    } finally {
      inflight.delete(ws.id);
    }
  })();
  inflight.set(ws.id, reading);
  return reading;
}

/** One page of a workspace's news (a chat is learnt first: learnChat). */
async function readOnce(ws) {
  const a = entry(ws.id);
  const rows = await api(wsPath(ws.id, `/activity?limit=${PAGE}&since_id=${a.known}`));
  for (const row of rows) {
    a.known = Math.max(a.known, row.id);
    setLatest(a, row.created_at);
    if (isFromAgent(row) && row.id > (seen[ws.id] || 0) && state.current?.id !== ws.id) {
      // What the server's unread count took in is not counted twice.
      if (row.id > (counted.get(ws.id) || 0)) a.unread += 1;
      notify(ws, row);
    }
  }
}

/**
 * A chat first seen: where it ends (the newest row's id, from the read
 * state) and when (that one row, read alone), never its history.
 */
async function learnChat(ws, newest) {
  const a = entry(ws.id);
  if (newest > 0) {
    const rows = await api(wsPath(ws.id, `/activity?limit=1&since_id=${newest - 1}`));
    if (rows[0]) setLatest(a, rows[0].created_at);
  }
  a.known = Math.max(a.known, newest);
  a.first = false;
}

/**
 * Asks the server what is new, in one request (the read state: counts
 * and each chat's newest row), then reads only the chats with rows the
 * page has not seen: a chat seen for the first time only for its newest
 * row's time (the order of the list), the others for their news (the
 * notifications). Then redraws counts and title. Whatever the fleet's
 * size, a quiet fleet costs one request.
 */
export async function pollActivity() {
  const ids = new Set(state.workspaces.map((w) => w.id));
  for (const id of activity.keys()) if (!ids.has(id)) activity.delete(id);
  const list = document.getElementById('workspace-list');
  list.setAttribute('aria-busy', 'true');
  try {
    const newest = await readState();
    const due = state.workspaces.filter((ws) => entry(ws.id).first || (newest.get(ws.id) || 0) > entry(ws.id).known);
    await Promise.all(due.map(async (ws) => {
      try {
        if (entry(ws.id).first) await learnChat(ws, newest.get(ws.id) || 0);
        else await readNew(ws);
      } catch {
        // One workspace failing (deleted meanwhile) leaves the others counted.
      }
    }));
  } finally {
    list.removeAttribute('aria-busy');
  }
  bus.dispatchEvent(new Event('activity'));
  paintTitle();
}

/** The stream named a new row of `wsId`: read that workspace. */
async function onNews(wsId, id) {
  const ws = state.workspaces.find((w) => w.id === wsId);
  if (!ws || id <= entry(wsId).known) return; // a new workspace: the list read brings it
  try {
    // Not learnt yet (the list's first poll is on its way): where it ends.
    if (entry(wsId).first) await learnChat(ws, id);
    else await readNew(ws);
  } catch {
    return; // deleted meanwhile: the next list read drops it
  }
  bus.dispatchEvent(new Event('activity'));
  paintTitle();
}

let fleet = null;

/** Follows the fleet's stream until stopFleet(); reconnects with backoff. */
export function startFleet() {
  fleet?.abort();
  fleet = new AbortController();
  const { signal } = fleet;
  (async () => {
    let backoff = 1000;
    while (!signal.aborted) {
      try {
        const res = await fetch('/admin/activity/events', {
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
        // Whatever happened while the stream was down.
        pollActivity().catch(() => {});
        await readEventStream(res.body, signal, ({ event, data }) => {
          if (event === 'resync') {
            pollActivity().catch(() => {});
            return;
          }
          if (event === 'read') {
            // Another page of this token read a chat (or all of them).
            readState().catch(() => {});
            return;
          }
          if (event !== 'activity') return;
          try {
            const { workspace_id: wsId, id } = JSON.parse(data);
            onNews(wsId, id);
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
  })();
}

/** Stops following the fleet's stream (sign-out). */
export function stopFleet() {
  fleet?.abort();
  fleet = null;
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

async function notify(ws, row) {
  if (!notifying()) return;
  await markdownReady(); // read as Markdown, not as the raw text
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
