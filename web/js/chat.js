// The open chat: its header, history then the live stream, and the
// composer that sends text to the agent.

import { api, wsPath } from './api.js';
import { reconcileUploads, setUploadState } from './chips.js';
import { $, ago } from './dom.js';
import { renderRow, scrollToBottom } from './messages.js';
import { STATUS_LABEL, bus, state } from './state.js';
import { followEvents } from './stream.js';
import { renderWorkspaces } from './workspaces.js';

const HISTORY_PAGE = 500; // the API's largest `limit`
const HISTORY_MAX_PAGES = 20; // at most 10 000 rows on first load

function renderChatHeader() {
  const ws = state.current;
  $('chat-title').textContent = ws.name;
  const parts = [`${ws.delivery_mode} mode`, STATUS_LABEL[ws.status] || ws.status];
  if (ws.last_heartbeat_at) parts.push(`last heartbeat ${ago(ws.last_heartbeat_at)}`);
  if (ws.delivery_mode === 'push' && ws.url) parts.push(ws.url);
  $('chat-meta').textContent = parts.join(' · ');
}

function setLive(text, cls) {
  const live = $('live-status');
  live.textContent = text;
  live.className = `live ${cls || ''}`;
}

/** Closes the open chat, if any, and stops its event stream. */
export function closeChat() {
  state.stream?.abort();
  state.stream = null;
  state.current = null;
  $('chat-body').hidden = true;
  $('chat-title').textContent = 'Choose a workspace';
  $('chat-meta').textContent = 'Pick one from the list to chat with its agent and send it files.';
  $('live-status').textContent = '';
  for (const a of document.querySelectorAll('#workspace-list [aria-current]')) a.removeAttribute('aria-current');
}

/** Opens `ws`'s chat: its history, then its live events. */
export async function openChat(ws) {
  closeChat();
  state.current = ws;
  state.lastId = 0;
  state.rendered = new Set();
  state.uploadStates = new Map();
  state.chips = new Map();
  const stream = new AbortController();
  state.stream = stream;
  renderWorkspaces();
  renderChatHeader();
  $('chat-body').hidden = false;
  $('messages').replaceChildren();
  $('uploads').replaceChildren();
  $('chat-error').textContent = '';
  $('send-error').textContent = '';

  // History first (oldest first, page by page), then the live stream from
  // the last id seen, so that no row is missed or shown twice.
  const log = $('messages');
  log.setAttribute('aria-busy', 'true');
  try {
    for (let page = 0; page < HISTORY_MAX_PAGES; page += 1) {
      const rows = await api(wsPath(ws.id, `/activity?limit=${HISTORY_PAGE}&since_id=${state.lastId}`), { signal: stream.signal });
      rows.forEach(renderRow);
      if (rows.length < HISTORY_PAGE) break;
    }
    await reconcileUploads(ws.id, stream.signal);
  } catch (e) {
    if (e.name === 'AbortError') return;
    $('chat-error').textContent = `Could not load the conversation: ${e.message}`;
  } finally {
    log.removeAttribute('aria-busy');
  }
  scrollToBottom(true);
  if (stream.signal.aborted) return;
  followEvents(ws.id, stream.signal, {
    onEvent: handleEvent,
    onLive: setLive,
    onOpen: (first) => {
      $('chat-error').textContent = '';
      // Files may have moved while we were disconnected.
      if (!first) reconcileUploads(ws.id, stream.signal).catch(() => {});
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
    renderRow(payload);
    scrollToBottom(payload.activity_type !== 'agent_message');
  } else if (event === 'upload') {
    setUploadState(payload.file_id, payload.state);
  }
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

  $('back').addEventListener('click', () => {
    location.hash = '';
  });

  $('send-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const box = $('message');
    const text = box.value.trim();
    const err = $('send-error');
    err.textContent = '';
    if (!text || !state.current) return;
    const button = $('send');
    button.disabled = true;
    try {
      await api(wsPath(state.current.id, '/a2a'), {
        method: 'POST',
        body: { method: 'message/send', params: { message: { role: 'user', parts: [{ kind: 'text', text }] } } },
      });
      // The row itself arrives through the event stream.
      box.value = '';
    } catch (ex) {
      err.textContent = `Not sent: ${ex.message}`;
    } finally {
      button.disabled = false;
      box.focus();
    }
  });

  $('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('send-form').requestSubmit();
    }
  });
}
