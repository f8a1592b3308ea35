// The page's one shared state, and the bus that tells the parts of the page
// about changes they did not cause (so that no module has to import the
// module that listens).

export const TOKEN_KEY = 'molecule.adminToken';

export const state = {
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

/**
 * Events: `workspaces` (the list was re-read), `unauthorized` (the token
 * stopped working; detail = the sentence to show on the sign-in form).
 */
export const bus = new EventTarget();

export const STATUS_LABEL = { online: 'online', offline: 'offline', never_connected: 'never connected' };
