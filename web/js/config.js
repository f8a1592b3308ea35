// The server's settings the page acts on, from GET /admin/config: the
// upload limits (shown before a file is sent, and checked before sending
// it), the online window (`--offline-after`, which the page's own status
// clock follows) and the default tier (named in the create form). Read
// once per sign-in; until then, and against a server without the route,
// the page keeps its defaults and the server's own checks still apply.

import { api } from './api.js';
import { bus, state } from './state.js';

/** Reads the settings into `state.config`, then announces `config` on the bus. */
export async function loadConfig() {
  state.config = await api('/admin/config');
  bus.dispatchEvent(new Event('config'));
}

/** The largest file one upload may carry, in bytes, or 0 while unknown. */
export function maxUploadBytes() {
  const c = state.config;
  // One request per file: the request's own cap bounds the file as well.
  return c ? Math.min(c.max_file_bytes, c.max_request_bytes) : 0;
}
