// The open chat: its header, history then the live stream, and the
// composer that sends text to the agent.

import { api, wsPath } from './api.js';
import { clearAttachments, hasAttachments, stageAttachments } from './attach.js';
import { reconcileUploads, setUploadState } from './chips.js';
import { $, nextTask } from './dom.js';
import { markdownReady } from './markdown.js';
import { FIRST_DRAW, PAGE, SLICE, atBottom, hasOlder, keepOlderRows, keepRows, renderRow, resetRows, scrollToBottom, setDelegationStatus, showNewest, showOlder } from './messages.js';
import { STATUS_LABEL, agentStatus, bus, state } from './state.js';
import { followEvents } from './stream.js';
import { initMessageActions, sendDone, sendFailed } from './msgactions.js';
import { markSeen, noteLiveRow } from './unread.js';
import { lastContact, markCurrent } from './workspaces.js';

const HISTORY_PAGE = 500; // the API's largest `limit`
const FIRST_PAGE = 100; // on open: the page drawn, the smallest answer to wait for
// `before_id` for "the newest rows": larger than any id.
const NEWEST = Number.MAX_SAFE_INTEGER;
const LEDGER_PAGE = 500; // the delegations listing's largest `limit`
// Scrolled this close to the top, the next older page is drawn.
const OLDER_MARGIN_PX = 400;

// The header says "agent …" for the agent's status and "this page: …"
// for the page's own event stream: the two are different connections and
// one may be up while the other is down.
function renderChatHeader() {
  const ws = state.current;
  $('chat-title').textContent = ws.name;
  const status = agentStatus(ws);
  const parts = [`${ws.delivery_mode} mode`, `agent ${STATUS_LABEL[status] || status}`];
  const contact = lastContact(ws);
  if (contact) parts.push(contact);
  if (ws.delivery_mode === 'push' && ws.url) parts.push(ws.url);
  const text = parts.join(' · ');
  if ($('chat-meta').textContent !== text) $('chat-meta').textContent = text;
}

function setLive(text, cls) {
  const live = $('live-status');
  live.textContent = text ? `this page: ${text}` : '';
  live.className = `live ${cls || ''}`;
}

/** Shows or hides the "new message ↓" marker. */
function setMarker(shown) {
  $('new-marker').hidden = !shown;
}

/** Closes the open chat, if any, and stops its event stream. */
export function closeChat() {
  state.stream?.abort();
  state.stream = null;
  state.current = null;
  $('chat-body').hidden = true;
  $('manage').hidden = true;
  $('chat-title').textContent = 'Choose a workspace';
  $('chat-meta').textContent = 'Pick one from the list to chat with its agent and send it files.';
  // The page follows no stream now: no status, and no live dot either.
  setLive('', '');
  setMarker(false);
  for (const a of document.querySelectorAll('#workspace-list [aria-current]')) a.removeAttribute('aria-current');
  bus.dispatchEvent(new Event('chat-close')); // the workspace tabs follow
}

/** Opens `ws`'s chat: its history, then its live events. */
export async function openChat(ws) {
  closeChat();
  state.current = ws;
  resetRows();
  state.uploadStates = new Map();
  state.chips = new Map();
  for (const url of state.thumbs.values()) URL.revokeObjectURL(url);
  state.thumbs = new Map();
  const stream = new AbortController();
  state.stream = stream;
  markCurrent();
  renderChatHeader();
  $('chat-body').hidden = false;
  $('manage').hidden = false;
  bus.dispatchEvent(new Event('chat-open'));
  $('uploads').replaceChildren();
  clearAttachments();
  $('chat-search').value = '';
  applySearch();
  $('chat-error').textContent = '';
  $('send-error').textContent = '';
  sendDone();

  // History backwards: the newest page only (a 10 000-message chat opens
  // as fast as a short one), older pages fetched as the reader scrolls up
  // (or searches). Then the live stream from the last id seen, so that no
  // row is missed or shown twice.
  const log = $('messages');
  log.setAttribute('aria-busy', 'true');
  try {
    // The Markdown libraries load behind the page's start: in by now,
    // or soon (the history is drawn with them).
    const [rows] = await Promise.all([readOlder(ws.id, stream.signal), markdownReady()]);
    keepRows(rows);
    // The newest rows first, on screen at once; the rest of the newest
    // page after that frame, a slice per task (short tasks, not one long
    // one: a row with Markdown costs a millisecond or more on a busy machine).
    showNewest(FIRST_DRAW);
    scrollToBottom(true);
    await nextFrame();
    for (let left = PAGE - FIRST_DRAW; left > 0 && hasOlder(); left -= SLICE) {
      if (stream.signal.aborted) return;
      showOlder(Math.min(SLICE, left));
      await nextTask();
    }
    if (stream.signal.aborted) return;
    await reconcileUploads(ws.id, stream.signal);
    readLedger(ws.id, stream.signal).catch(() => {});
  } catch (e) {
    if (e.name === 'AbortError') return;
    $('chat-error').textContent = `Could not load the conversation: ${e.message}`;
  } finally {
    log.removeAttribute('aria-busy');
  }
  if (stream.signal.aborted) return;
  scrollToBottom(true);
  markSeen(ws.id, state.lastId);
  markCurrent();
  followEvents(ws.id, stream.signal, {
    onEvent: handleEvent,
    onLive: setLive,
    onOpen: (first) => {
      $('chat-error').textContent = '';
      // Files (and delegations) may have moved while we were disconnected.
      if (!first) {
        reconcileUploads(ws.id, stream.signal).catch(() => {});
        readLedger(ws.id, stream.signal, true).catch(() => {});
        bus.dispatchEvent(new CustomEvent('stream', { detail: { event: 'resync', payload: {} } }));
      }
    },
    onGone: () => {
      $('chat-error').textContent = 'This workspace was deleted.';
      setLive('', '');
    },
  });
}

function handleEvent({ event, data }) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return;
  }
  if (event === 'activity') {
    bus.dispatchEvent(new CustomEvent('activity-row', { detail: payload }));
    // Decide before the row is added: a tall reply must not push the
    // bottom out of the "near the bottom" band and so out of view.
    const follow = atBottom();
    const own = payload.activity_type === 'a2a_receive' && payload.data?.source === 'canvas_user';
    if (!renderRow(payload)) return;
    noteLiveRow(state.current, payload);
    if ($('chat-search').value) applySearch();
    if (follow || own) scrollToBottom(true);
    else setMarker(true); // never yank the view from someone reading older messages
  } else if (event === 'upload') {
    setUploadState(payload.file_id, payload.state);
  } else {
    // A delegation's move: its chips in the conversation follow.
    if (event === 'delegation' && payload.delegation_id) setDelegationStatus(payload.delegation_id, payload.status);
    // Other events (delegation moves) are for the panels that show them too.
    bus.dispatchEvent(new CustomEvent('stream', { detail: { event, payload } }));
  }
}

/**
 * Where the delegations the conversation shows stand: the workspace's
 * newest ledger rows in one listing (on open, and after a reconnect, when
 * `all` is set), then one read per drawn delegation the listing did not
 * cover. Live moves arrive on the stream (handleEvent).
 */
async function readLedger(wsId, signal, all = false) {
  if (all || !state.ledgerRead) {
    const rows = await api(wsPath(wsId, `/delegations?limit=${LEDGER_PAGE}`), { signal });
    if (state.current?.id !== wsId) return;
    state.ledgerRead = true;
    for (const d of rows) setDelegationStatus(d.id, d.status);
  }
  const wanted = [...state.dwanted].filter(([did]) => !state.dstatus.has(did));
  state.dwanted.clear();
  await Promise.all(wanted.map(async ([did, callee]) => {
    try {
      const d = await api(wsPath(callee || wsId, `/delegations/${encodeURIComponent(did)}`), { signal });
      if (state.current?.id === wsId) setDelegationStatus(did, d.status);
    } catch {
      // purged or unreachable: the chip keeps the row's own status
    }
  }));
}

/** After the next frame is drawn (or 100 ms in a hidden tab, which draws none). */
const nextFrame = () => new Promise((resolve) => {
  requestAnimationFrame(() => setTimeout(resolve, 0));
  setTimeout(resolve, 100);
});

/**
 * The page of history before the oldest row kept (the newest page at
 * first), oldest first; notes where the next one starts and whether the
 * beginning was reached.
 */
async function readOlder(wsId, signal) {
  const first = state.historyBefore === null;
  const limit = first ? FIRST_PAGE : HISTORY_PAGE;
  const rows = await api(wsPath(wsId, `/activity?limit=${limit}&before_id=${first ? NEWEST : state.historyBefore}`), { signal });
  if (rows.length > 0) state.historyBefore = rows[0].id;
  state.historyDone = rows.length < limit;
  return rows;
}

/** Fetches the next older page into the kept rows (one fetch at a time). */
function loadOlder() {
  const ws = state.current;
  // Nothing before the first page is in: the chat is still opening (a
  // scroll event from clearing the log must not fetch the newest page again).
  if (!ws || state.historyDone || state.historyBefore === null) return Promise.resolve(false);
  state.loadingOlder ??= readOlder(ws.id, state.stream?.signal)
    .then((rows) => {
      if (state.current?.id !== ws.id) return false;
      keepOlderRows(rows);
      return rows.length > 0;
    })
    .catch(() => false)
    .finally(() => { state.loadingOlder = null; });
  return state.loadingOlder;
}

/** Each drawn row's text, lowercased once: keystrokes compare strings, not the DOM's text. */
const searchText = new WeakMap();
const SEARCH_DEBOUNCE_MS = 150;
let searchTimer = 0;

/** A keystroke in the search: one search once typing pauses, not one per key. */
function searchSoon() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(applySearch, SEARCH_DEBOUNCE_MS);
}

/**
 * Search within the conversation: only the messages containing the words
 * stay shown (day separators hide while searching), with a count.
 */
async function applySearch() {
  const q = $('chat-search').value.trim().toLowerCase();
  // A search covers the whole conversation: all of it is fetched, then
  // every kept row is drawn.
  if (q) {
    while (!state.historyDone && await loadOlder());
    if ($('chat-search').value.trim().toLowerCase() !== q) return; // a newer keystroke searches
    while (showOlder());
  }
  let matches = 0;
  for (const li of $('messages').children) {
    if (!q) {
      li.hidden = false;
      continue;
    }
    let text = searchText.get(li);
    if (text === undefined) {
      text = li.classList.contains('day') ? null : li.textContent.toLowerCase();
      searchText.set(li, text);
    }
    const hit = text !== null && text.includes(q);
    li.hidden = !hit;
    if (hit) matches += 1;
  }
  $('search-count').textContent = q ? `${matches} matching message${matches === 1 ? '' : 's'}` : '';
}

/** Wires the composer and the Back button; called once at start. */
export function initChat() {
  // Keep the open chat's header in step with the list.
  bus.addEventListener('workspaces', () => {
    if (!state.current) return;
    const fresh = state.workspaces.find((w) => w.id === state.current.id);
    if (fresh) {
      state.current = fresh;
      renderChatHeader();
    }
  });
  bus.addEventListener('tick', () => {
    if (state.current) renderChatHeader();
  });

  $('new-marker').addEventListener('click', () => {
    scrollToBottom(true);
    setMarker(false);
    $('log').focus();
  });
  $('log').addEventListener('scroll', () => {
    if (atBottom()) setMarker(false);
    const log = $('log');
    if (log.scrollTop >= OLDER_MARGIN_PX) return;
    const drawOlder = () => {
      if (!showOlder()) return;
      if (state.current) readLedger(state.current.id, state.stream?.signal).catch(() => {});
    };
    if (hasOlder()) drawOlder();
    else loadOlder().then((more) => { if (more) drawOlder(); });
  }, { passive: true });

  $('chat-search').addEventListener('input', searchSoon);
  $('chat-search').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      $('chat-search').value = '';
      clearTimeout(searchTimer);
      applySearch();
    }
  });

  $('back').addEventListener('click', () => {
    location.hash = '';
  });

  // Sends `text`; `fromBox`: it is the composer's, cleared once sent. A
  // failed send keeps its text for Retry (msgactions.js).
  const send = async (text, fromBox) => {
    const box = $('message');
    const err = $('send-error');
    err.textContent = '';
    if ((!text && !hasAttachments()) || !state.current) return;
    const button = $('send');
    button.disabled = true;
    try {
      // Files in the tray are staged first, then named by the message.
      const files = await stageAttachments(state.current.id);
      const parts = [...(text ? [{ kind: 'text', text }] : []), ...files];
      await api(wsPath(state.current.id, '/a2a'), {
        method: 'POST',
        body: { method: 'message/send', params: { message: { role: 'user', parts } } },
      });
      // The row itself arrives through the event stream.
      if (fromBox && box.value.trim() === text) box.value = '';
      clearAttachments();
      sendDone();
    } catch (ex) {
      err.textContent = `Not sent: ${ex.message}`;
      sendFailed(text);
    } finally {
      button.disabled = false;
      box.focus();
    }
  };
  $('send-form').addEventListener('submit', (e) => {
    e.preventDefault();
    send($('message').value.trim(), true);
  });
  initMessageActions((text) => send(text, $('message').value.trim() === text));

  $('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('send-form').requestSubmit();
    }
  });
}
