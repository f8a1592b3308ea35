// molecule canvas: the operator's page. Plain ES module, no build step, no
// dependencies; everything it talks to is the API of shared/API.md on this
// same origin, authenticated with the admin token kept in localStorage.

const TOKEN_KEY = 'molecule.adminToken';
const HISTORY_PAGE = 500; // the API's largest `limit`
const HISTORY_MAX_PAGES = 20; // at most 10 000 rows on first load
const LIST_REFRESH_MS = 20_000; // online status changes on heartbeats, every few tens of seconds
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

// Hand-off states of a staged file, in the only order they can move.
const UPLOAD_RANK = { staged: 1, fetched: 2, acked: 3, expired: 3, gone: 3 };
const UPLOAD_LABEL = {
  staged: 'waiting for the agent',
  // Only the workspace's own download counts; the operator's does not.
  fetched: 'downloaded by the agent, not yet acknowledged',
  acked: 'delivered',
  expired: 'expired',
  // Seen only for history: the sweep already removed the file's record
  // (an hour after delivery, or once expired), so its fate is not known.
  gone: 'delivered or expired',
};

const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  workspaces: [],
  current: null, // the workspace whose chat is open
  lastId: 0, // the newest activity id rendered: the SSE resume cursor
  rendered: new Set(), // activity ids already in the list
  uploadStates: new Map(), // file_id -> latest known state (may arrive before its row)
  chips: new Map(), // file_id -> chip element
  stream: null, // AbortController of the open event stream
  listTimer: null,
};

// ------------------------------------------------------------------ API

/** An API failure, with the server's own sentence when it sent one. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const NETWORK_DOWN = 'Cannot reach the server. Check that it is running and that you are online.';

/** Reads `{"error": …}` from a failed response, else describes the status. */
async function errorOf(res) {
  let message = '';
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON (a proxy's page, a cut connection): fall back to the status.
  }
  return new ApiError(res.status, message || `The server answered ${res.status} ${res.statusText}.`.trim());
}

/** fetch() with the token; JSON in and out; throws ApiError. */
async function api(path, { method = 'GET', body, signal, token = state.token } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, NETWORK_DOWN);
  }
  if (!res.ok) {
    const err = await errorOf(res);
    // A token that stops working mid-session (rotated, server restarted
    // with another one) sends the operator back to the sign-in form.
    if (res.status === 401 && token === state.token && state.token) signOut('That token was refused. Sign in again.');
    throw err;
  }
  if (res.status === 204) return null;
  return res.json();
}

const wsPath = (id, rest = '') => `/workspaces/${encodeURIComponent(id)}${rest}`;

// ------------------------------------------------------------------ formatting

function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function ago(iso) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const STATUS_LABEL = { online: 'online', offline: 'offline', paused: 'paused', removed: 'removed', failed: 'failed' };

/** Small element builder: el('p', {class: 'x'}, 'text', child). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// ------------------------------------------------------------------ views

function show(view) {
  document.body.dataset.view = view;
  const signedIn = view !== 'signin';
  $('signin-view').hidden = signedIn;
  $('app-view').hidden = !signedIn;
  $('signout').hidden = !signedIn;
}

// ------------------------------------------------------------------ sign in

async function signIn(token) {
  // Check the token before keeping it: GET /workspaces is operator-only.
  const list = await api('/workspaces', { token });
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
  state.workspaces = list;
  enterApp();
}

function signOut(message = '') {
  closeChat();
  clearInterval(state.listTimer);
  state.token = '';
  localStorage.removeItem(TOKEN_KEY);
  show('signin');
  $('signin-error').textContent = message;
  $('token').value = '';
  $('token').focus();
}

function enterApp() {
  show('list');
  renderWorkspaces();
  clearInterval(state.listTimer);
  state.listTimer = setInterval(() => refreshWorkspaces().catch(() => {}), LIST_REFRESH_MS);
  route();
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  const err = $('signin-error');
  if (!token) {
    err.textContent = 'Enter the admin token.';
    $('token').focus();
    return;
  }
  err.textContent = '';
  const button = e.submitter || e.target.querySelector('button');
  button.disabled = true;
  try {
    await signIn(token);
  } catch (ex) {
    err.textContent = ex.status === 401 ? 'That token was refused. Check it and try again.' : ex.message;
    $('token').select();
  } finally {
    button.disabled = false;
  }
});

$('signout').addEventListener('click', () => signOut());

// ------------------------------------------------------------------ workspaces

async function refreshWorkspaces() {
  try {
    state.workspaces = await api('/workspaces');
    $('workspaces-error').textContent = '';
  } catch (e) {
    if (e.status !== 401) $('workspaces-error').textContent = `Could not load the workspaces: ${e.message}`;
    throw e;
  }
  renderWorkspaces();
}

function statusBadge(ws) {
  return el('span', { class: `status status-${ws.status}` }, STATUS_LABEL[ws.status] || ws.status);
}

function renderWorkspaces() {
  const list = $('workspace-list');
  const focusedId = document.activeElement?.closest?.('[data-ws]')?.dataset.ws;
  list.replaceChildren(
    ...state.workspaces.map((ws) => {
      const heartbeat = ws.last_heartbeat_at
        ? el('span', { class: 'hint', title: new Date(ws.last_heartbeat_at).toLocaleString() },
          `last heartbeat ${ago(ws.last_heartbeat_at)}`)
        : null;
      const link = el('a', {
        href: `#/w/${ws.id}`,
        class: 'workspace',
        dataset: { ws: ws.id },
        'aria-current': state.current?.id === ws.id ? 'page' : null,
      },
      el('span', { class: 'ws-name' }, ws.name),
      el('span', { class: 'ws-meta' },
        el('span', { class: `mode mode-${ws.delivery_mode}` }, ws.delivery_mode),
        statusBadge(ws),
        heartbeat));
      return el('li', {}, link);
    }),
  );
  $('workspaces-empty').hidden = state.workspaces.length > 0;
  if (focusedId) list.querySelector(`[data-ws="${CSS.escape(focusedId)}"]`)?.focus();
  // Keep the open chat's header in step with the list.
  if (state.current) {
    const fresh = state.workspaces.find((w) => w.id === state.current.id);
    if (fresh) {
      state.current = fresh;
      renderChatHeader();
    }
  }
}

$('refresh').addEventListener('click', () => refreshWorkspaces().catch(() => {}));

// The URL field matters only for push workspaces.
for (const radio of document.querySelectorAll('input[name="delivery_mode"]')) {
  radio.addEventListener('change', () => {
    $('url-field').hidden = $('create-form').delivery_mode.value !== 'push';
  });
}

$('create-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  const err = $('create-error');
  err.textContent = '';
  const name = form.name.value.trim();
  if (!name) {
    err.textContent = 'Give the workspace a name.';
    form.name.focus();
    return;
  }
  const body = { name, delivery_mode: form.delivery_mode.value };
  const url = form.url.value.trim();
  if (body.delivery_mode === 'push' && url) body.url = url;
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const created = await api('/workspaces', { method: 'POST', body });
    form.reset();
    $('url-field').hidden = true;
    $('created-name').textContent = created.name;
    $('connect-command').value = created.connection.connect_command;
    $('copy-status').textContent = '';
    $('create-result').hidden = false;
    $('connect-command').focus();
    $('connect-command').select();
    $('create-result').scrollIntoView({ block: 'nearest' });
    await refreshWorkspaces().catch(() => {});
  } catch (ex) {
    err.textContent = `Could not create the workspace: ${ex.message}`;
  } finally {
    button.disabled = false;
  }
});

$('copy-command').addEventListener('click', async () => {
  const text = $('connect-command').value;
  const status = $('copy-status');
  try {
    // The Clipboard API needs a secure context (https or localhost).
    await navigator.clipboard.writeText(text);
    status.textContent = 'Copied to the clipboard.';
  } catch {
    $('connect-command').select();
    status.textContent = 'Select and copy the command above (Ctrl+C / ⌘C): the browser refused clipboard access.';
  }
});

// ------------------------------------------------------------------ routing

// `#/w/<id>` opens a chat, so a reload or a shared link keeps the view.
function route() {
  if (!state.token) return;
  const m = location.hash.match(/^#\/w\/([0-9a-fA-F-]{36})$/);
  if (!m) {
    closeChat();
    show('list');
    return;
  }
  const ws = state.workspaces.find((w) => w.id === m[1]);
  if (!ws) {
    closeChat();
    show('list');
    $('workspaces-error').textContent = 'That workspace does not exist (any more).';
    return;
  }
  if (state.current?.id !== ws.id) openChat(ws);
  show('chat');
}

window.addEventListener('hashchange', route);
$('back').addEventListener('click', () => {
  location.hash = '';
});

// ------------------------------------------------------------------ chat

function renderChatHeader() {
  const ws = state.current;
  $('chat-title').textContent = ws.name;
  const parts = [`${ws.delivery_mode} mode`, STATUS_LABEL[ws.status] || ws.status];
  if (ws.last_heartbeat_at) parts.push(`last heartbeat ${ago(ws.last_heartbeat_at)}`);
  if (ws.delivery_mode === 'push' && ws.url) parts.push(ws.url);
  $('chat-meta').textContent = parts.join(' · ');
}

function closeChat() {
  state.stream?.abort();
  state.stream = null;
  state.current = null;
  $('chat-body').hidden = true;
  $('chat-title').textContent = 'Choose a workspace';
  $('chat-meta').textContent = 'Pick one from the list to chat with its agent and send it files.';
  $('live-status').textContent = '';
  for (const a of document.querySelectorAll('#workspace-list [aria-current]')) a.removeAttribute('aria-current');
}

async function openChat(ws) {
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
  if (!stream.signal.aborted) followEvents(ws.id, stream.signal);
}

function scrollToBottom(force = false) {
  const log = $('messages');
  // Follow new rows only when the reader is already at the bottom: never
  // yank the view away from someone reading older messages.
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  if (force || nearBottom) log.scrollTop = log.scrollHeight;
}

function timeOf(row) {
  const d = new Date(row.created_at);
  return el('time', { datetime: row.created_at, title: d.toLocaleString() },
    d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
}

/** The text parts of a JSON-RPC answer (a push workspace's reply). */
function textOfAnswer(answer) {
  const texts = [];
  const walk = (v, depth) => {
    if (!v || typeof v !== 'object' || depth > 6) return;
    if (Array.isArray(v)) {
      v.forEach((x) => walk(x, depth + 1));
      return;
    }
    if (v.kind === 'text' && typeof v.text === 'string') texts.push(v.text);
    for (const k of ['result', 'parts', 'artifacts', 'status', 'message']) walk(v[k], depth + 1);
  };
  walk(answer, 0);
  return texts.join('\n');
}

function bubble(side, who, row, ...content) {
  return el('li', { class: `msg msg-${side}`, dataset: { id: row.id, type: row.activity_type } },
    el('div', { class: 'msg-head' }, el('span', { class: 'who' }, who), timeOf(row)),
    ...content);
}

function renderRow(row) {
  if (state.rendered.has(row.id)) return;
  state.rendered.add(row.id);
  state.lastId = Math.max(state.lastId, row.id);
  const log = $('messages');
  const data = row.data || {};

  if (row.activity_type === 'a2a_receive' && row.method === 'chat_upload_receive') {
    // Consecutive uploads share one bubble, as they were sent together.
    const last = log.lastElementChild;
    const chip = uploadChip(data);
    if (last?.dataset.type === 'upload' && new Date(row.created_at) - new Date(last.dataset.at) < 60_000) {
      last.querySelector('.chips').append(chip);
    } else {
      const b = bubble('out', 'You', row, el('ul', { class: 'chips', 'aria-label': 'Attachments' }, chip));
      b.dataset.type = 'upload';
      b.dataset.at = row.created_at;
      log.append(b);
    }
  } else if (row.activity_type === 'a2a_receive') {
    const who = data.source === 'peer_agent' ? `Peer ${data.source_id || 'agent'}` : 'You';
    log.append(bubble('out', who, row, el('p', { class: 'text' }, data.text ?? row.summary ?? '')));
    // A push workspace answers inline: its reply is stored on the same row.
    if (row.response_body) {
      const reply = textOfAnswer(row.response_body);
      if (reply) log.append(bubble('in', state.current?.name || 'Agent', row, el('p', { class: 'text' }, reply)));
    }
  } else if (row.activity_type === 'agent_message') {
    const attachments = Array.isArray(data.attachments) ? data.attachments : [];
    log.append(bubble('in', state.current?.name || 'Agent', row,
      el('p', { class: 'text' }, data.text ?? row.summary ?? ''),
      attachments.length
        ? el('ul', { class: 'chips', 'aria-label': 'Attachments from the agent' },
          ...attachments.map((a) => el('li', { class: 'chip', title: a.uri || '' },
            el('span', { class: 'chip-name' }, a.name || a.uri || 'file'),
            a.size ? el('span', { class: 'hint' }, formatSize(a.size)) : null)))
        : null));
  } else {
    // Anything else the agent reported: one quiet line.
    const text = [row.activity_type, row.method, row.summary, row.status, row.error_detail].filter(Boolean).join(' · ');
    log.append(el('li', { class: 'msg msg-note', dataset: { id: row.id } }, timeOf(row), ' ', text));
  }
}

// ------------------------------------------------------------------ upload chips

function uploadChip(data) {
  const fileId = data.file_id;
  const label = el('span', { class: 'chip-state' });
  const download = el('button', {
    type: 'button',
    class: 'chip-download',
    'aria-label': `Download ${data.filename}`,
    onclick: () => downloadStaged(fileId, data.filename, chip),
  }, 'Download');
  const error = el('span', { class: 'error chip-error', role: 'alert' });
  const chip = el('li', { class: 'chip', dataset: { fileId } },
    el('span', { class: 'chip-name' }, data.filename),
    el('span', { class: 'hint' }, formatSize(data.size)),
    label, download, error);
  state.chips.set(fileId, chip);
  paintChip(chip, state.uploadStates.get(fileId) || 'staged');
  return chip;
}

function paintChip(chip, s) {
  chip.dataset.state = s;
  chip.querySelector('.chip-state').textContent = UPLOAD_LABEL[s] || s;
  // The bytes are on the server only until the agent acknowledges them.
  chip.querySelector('.chip-download').hidden = !(s === 'staged' || s === 'fetched');
}

/** Moves a file's state forward (never back: events may arrive late or twice). */
function setUploadState(fileId, s) {
  const prev = state.uploadStates.get(fileId);
  if (prev && (UPLOAD_RANK[prev] || 0) >= (UPLOAD_RANK[s] || 0)) return;
  state.uploadStates.set(fileId, s);
  const chip = state.chips.get(fileId);
  if (chip) paintChip(chip, s);
}

/**
 * Upload events are not replayed by the stream, so after a (re)connect the
 * server's own record tells where every file stands (`include=all` lists
 * acked and expired files too); a file missing from it was already swept.
 */
async function reconcileUploads(wsId, signal) {
  const all = await api(wsPath(wsId, '/pending-uploads?include=all'), { signal });
  const known = new Map(all.map((p) => [p.file_id, p.state]));
  for (const fileId of state.chips.keys()) {
    setUploadState(fileId, known.get(fileId) || 'gone');
  }
}

async function downloadStaged(fileId, filename, chip) {
  const ws = state.current;
  const error = chip.querySelector('.chip-error');
  error.textContent = '';
  try {
    // A plain link cannot carry the bearer token: fetch, then hand the
    // browser a blob URL to save.
    let res;
    try {
      res = await fetch(wsPath(ws.id, `/pending-uploads/${encodeURIComponent(fileId)}/content`), {
        headers: { Authorization: `Bearer ${state.token}` },
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, NETWORK_DOWN);
    }
    if (!res.ok) throw await errorOf(res);
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    error.textContent = e.status === 404 ? 'No longer on the server: delivered or expired.' : e.message;
    if (e.status === 404) setUploadState(fileId, 'gone');
  }
}

// ------------------------------------------------------------------ live events

function setLive(text, cls) {
  const live = $('live-status');
  live.textContent = text;
  live.className = `live ${cls || ''}`;
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => {
    clearTimeout(t);
    resolve();
  }, { once: true });
});

/**
 * Follows GET /workspaces/:id/events. EventSource cannot send an
 * Authorization header, so the stream is read with fetch() and parsed here
 * (the text/event-stream format: `field: value` lines, a blank line ends
 * an event). Reconnects with exponential backoff, resuming after the last
 * activity id rendered.
 */
async function followEvents(wsId, signal) {
  let backoff = BACKOFF_MIN_MS;
  let first = true;
  while (!signal.aborted) {
    try {
      const res = await fetch(wsPath(wsId, `/events?since_id=${state.lastId}`), {
        headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal,
      });
      if (res.status === 401) {
        signOut('That token was refused. Sign in again.');
        return;
      }
      if (!res.ok) throw await errorOf(res);
      setLive('live', 'ok');
      $('chat-error').textContent = '';
      backoff = BACKOFF_MIN_MS;
      // Files may have moved while we were disconnected.
      if (!first) reconcileUploads(wsId, signal).catch(() => {});
      first = false;
      await readEventStream(res.body, signal, handleEvent);
    } catch (e) {
      if (signal.aborted) return;
      if (e.status === 404) {
        $('chat-error').textContent = 'This workspace was deleted.';
        setLive('', '');
        return;
      }
    }
    if (signal.aborted) return;
    setLive(`reconnecting in ${Math.round(backoff / 1000)} s…`, 'warn');
    // Jitter keeps many tabs from reconnecting in lockstep after a restart.
    await sleep(backoff + Math.random() * 300, signal);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}

/** Parses a text/event-stream body, calling onEvent({event, data, id}). */
async function readEventStream(body, signal, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buffer = '';
  let event = { event: 'message', data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // Lines end in LF, CRLF or CR; a CR at the very end may be half of a
    // CRLF split across chunks, so it waits for the next chunk.
    let m;
    while ((m = /\r\n|\n|\r(?!$)/.exec(buffer)) !== null) {
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (line === '') {
        if (event.data.length) onEvent({ event: event.event, data: event.data.join('\n'), id: event.id });
        event = { event: 'message', data: [], id: null };
        continue;
      }
      if (line.startsWith(':')) continue; // a comment: the keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') event.event = val;
      else if (field === 'data') event.data.push(val);
      else if (field === 'id') event.id = val;
    }
  }
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

// ------------------------------------------------------------------ sending text

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

// ------------------------------------------------------------------ uploading files

/**
 * One XMLHttpRequest per file: fetch() cannot report upload progress, and
 * one request per file gives each file its own bar and its own error.
 */
function uploadFile(file) {
  const ws = state.current;
  const bar = el('progress', { max: 100, value: 0, 'aria-label': `Upload of ${file.name}` });
  const pct = el('span', { class: 'pct' }, '0 %');
  const error = el('p', { class: 'error', role: 'alert' });
  const xhr = new XMLHttpRequest();
  const cancel = el('button', { type: 'button', class: 'ghost', onclick: () => xhr.abort() }, 'Cancel');
  const item = el('li', { class: 'upload', dataset: { name: file.name } },
    el('span', { class: 'chip-name' }, file.name),
    el('span', { class: 'hint' }, formatSize(file.size)),
    bar, pct, cancel, error);
  $('uploads').append(item);

  const fail = (message) => {
    item.classList.add('failed');
    item.dataset.status = 'failed';
    bar.remove();
    pct.remove();
    error.textContent = message;
    cancel.textContent = 'Dismiss';
    cancel.onclick = () => item.remove();
    // Keep the pane scrolled to the message.
    item.scrollIntoView({ block: 'nearest' });
  };

  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return;
    const p = Math.round((e.loaded / e.total) * 100);
    bar.value = p;
    pct.textContent = `${p} %`;
  });
  xhr.addEventListener('load', () => {
    if (xhr.status >= 200 && xhr.status < 300) {
      item.remove();
      // Poll mode: the chip arrives with the activity row on the event
      // stream. Push mode: the workspace took the file at once.
      if (ws.delivery_mode === 'push') renderPushedFiles(xhr.response);
      return;
    }
    let message = '';
    try {
      message = JSON.parse(xhr.responseText).error || '';
    } catch {
      // not JSON
    }
    if (!message) message = `The server answered ${xhr.status}.`;
    const prefix = xhr.status === 413 ? 'Too large: ' : 'Upload failed: ';
    if (xhr.status === 401) signOut('That token was refused. Sign in again.');
    fail(prefix + message);
  });
  xhr.addEventListener('error', () => fail(`Upload failed: ${NETWORK_DOWN}`));
  xhr.addEventListener('abort', () => fail('Upload cancelled.'));

  xhr.open('POST', wsPath(ws.id, '/chat/uploads'));
  xhr.setRequestHeader('Authorization', `Bearer ${state.token}`);
  xhr.responseType = 'text';
  const form = new FormData();
  form.append('files', file, file.name);
  xhr.send(form);
}

function renderPushedFiles(text) {
  let files = [];
  try {
    files = JSON.parse(text).files || [];
  } catch {
    return;
  }
  const now = new Date().toISOString();
  const chips = files.map((f) => el('li', { class: 'chip', dataset: { state: 'acked' } },
    el('span', { class: 'chip-name' }, f.name || f.uri),
    f.size ? el('span', { class: 'hint' }, formatSize(f.size)) : null,
    el('span', { class: 'chip-state' }, 'delivered')));
  $('messages').append(bubble('out', 'You', { id: '', activity_type: 'upload', created_at: now },
    el('ul', { class: 'chips', 'aria-label': 'Attachments' }, ...chips)));
  scrollToBottom(true);
}

function uploadFiles(files) {
  if (!state.current) return;
  for (const f of files) uploadFile(f);
}

$('file-input').addEventListener('change', (e) => {
  uploadFiles([...e.target.files]);
  e.target.value = ''; // choosing the same file again fires change again
});

// Drag and drop anywhere over the chat. dragenter/dragleave fire for every
// child element, so a counter tells when the pointer really left.
let dragDepth = 0;
const chat = $('chat-pane');
const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
chat.addEventListener('dragenter', (e) => {
  if (!hasFiles(e) || !state.current) return;
  e.preventDefault();
  dragDepth += 1;
  $('drop-overlay').hidden = false;
});
chat.addEventListener('dragover', (e) => {
  if (!hasFiles(e) || !state.current) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
});
chat.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) $('drop-overlay').hidden = true;
});
chat.addEventListener('drop', (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  $('drop-overlay').hidden = true;
  uploadFiles([...e.dataTransfer.files]);
});
// A file dropped next to the chat must not navigate away from the page.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// ------------------------------------------------------------------ start

async function start() {
  if (!state.token) {
    show('signin');
    $('token').focus();
    return;
  }
  try {
    await signIn(state.token);
  } catch (e) {
    if (e.status === 401) signOut('The saved token was refused. Sign in again.');
    else {
      show('signin');
      $('signin-error').textContent = e.message;
    }
  }
}

start();
