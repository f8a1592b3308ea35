// The page's one shared state, and the bus that tells the parts of the page
// about changes they did not cause (so that no module has to import the
// module that listens).

export const TOKEN_KEY = 'molecule.adminToken';

export const state = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  workspaces: [],
  current: null, // the workspace whose chat is open
  lastId: 0, // the newest activity id kept: the SSE resume cursor
  rendered: new Set(), // activity ids kept in `rows`
  // The open chat's conversation (messages.js): every row, oldest first,
  // and which of them are drawn (from `shownFrom` on).
  rows: [],
  shownFrom: 0,
  tail: null, // where live rows are drawn: {parent, day, upload}
  lastAgentId: 0, // the newest agent_message id: what came before it was answered
  relTimes: new Set(), // <time> elements still showing a relative time
  pending: new Set(), // delivery tags still queued or picked up
  dchips: new Map(), // delegation id -> its status chips in the conversation
  dstatus: new Map(), // delegation id -> its ledger status, as last known
  dwanted: new Map(), // delegation id -> callee: drawn, status not read yet
  ledgerRead: false, // the open workspace's ledger listing was read
  uploadStates: new Map(), // file_id -> latest known state (may arrive before its row)
  chips: new Map(), // file_id -> chip element
  thumbs: new Map(), // file_id -> object URL of an image's thumbnail
  stream: null, // AbortController of the open event stream
  listTimer: null,
  statusTimer: null,
  // The server's clock minus ours (from the first answer's Date header),
  // so that heartbeat ages are judged on the server's time.
  skewMs: null,
  // The server's settings (GET /admin/config), once read: upload limits,
  // the online window, the default tier. Null until then.
  config: null,
};

/**
 * Events: `workspaces` (the list was re-read), `unauthorized` (the token
 * stopped working; detail = the sentence to show on the sign-in form),
 * `chat-open` / `chat-close` (a workspace was opened or closed), `stream`
 * (an event of the open workspace's stream the chat does not show itself;
 * detail = {event, payload}).
 */
export const bus = new EventTarget();

export const STATUS_LABEL = { online: 'online', offline: 'offline', paused: 'paused', removed: 'removed', failed: 'failed' };

/**
 * The server's online window when its settings are not read yet: a
 * workspace is online while its last contact (heartbeat, registration, or
 * a push forward it answered) is at most this old (`--offline-after`, 90 s
 * by default).
 */
export const ONLINE_WINDOW_MS = 90_000;

/** The online window in force: the server's `--offline-after` once known. */
export const onlineWindowMs = () => (state.config ? state.config.offline_after_seconds * 1000 : ONLINE_WINDOW_MS);

/** Now, on the server's clock as far as we know it. */
export const serverNow = () => Date.now() + (state.skewMs ?? 0);

/**
 * The agent's status as of now: the server's answer is only as fresh as
 * the last read of the list, so the page judges the heartbeat's age
 * itself and an agent that stops shows offline when its window ends.
 */
export function agentStatus(ws) {
  // Paused, removed and failed are the server's word, not the clock's.
  if (['paused', 'removed', 'failed'].includes(ws.status)) return ws.status;
  if (!ws.last_heartbeat_at) return 'offline';
  const age = serverNow() - Date.parse(ws.last_heartbeat_at);
  return age <= onlineWindowMs() ? 'online' : 'offline';
}
