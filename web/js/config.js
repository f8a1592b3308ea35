// The server's settings the page acts on, from GET /admin/config: the
// upload limits (shown before a file is sent, and checked before sending
// it), the online window (`--offline-after`, which the page's own status
// clock follows), the default tier (named in the create form) and the
// role of the signed-in token (what the page offers). Read
// once per sign-in; until then, and against a server without the route,
// the page keeps its defaults and the server's own checks still apply.

import { api } from './api.js';
import { $, el } from './dom.js';
import { bus, state } from './state.js';

/**
 * Reads the settings into `state.config`, marks the page with the token's
 * role (`body[data-role]`: a viewer's page offers no write, an operator's
 * no token or global-secret view, as the server would refuse them), then
 * announces `config` on the bus.
 */
export async function loadConfig() {
  delete document.body.dataset.role;
  readOnlyNote().hidden = true;
  state.config = await api('/admin/config');
  const role = state.config.role || 'admin';
  document.body.dataset.role = role;
  readOnlyNote().hidden = role !== 'viewer';
  bus.dispatchEvent(new Event('config'));
}

/** The note that takes the composer's place on a viewer's page. */
function readOnlyNote() {
  let note = $('readonly-note');
  if (!note) {
    note = el('p', { id: 'readonly-note', class: 'hint readonly-note', hidden: true },
      'Read-only: this canvas is signed in with a viewer token, which may read everything but change nothing. '
      + 'Sign in with an operator or admin token to send, upload or edit.');
    $('send-form').before(note);
  }
  return note;
}

/** The largest file one upload may carry, in bytes, or 0 while unknown. */
export function maxUploadBytes() {
  const c = state.config;
  // One request per file: the request's own cap bounds the file as well.
  return c ? Math.min(c.max_file_bytes, c.max_request_bytes) : 0;
}
