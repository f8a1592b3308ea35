// Files sent WITH a message: "Attach with the text" puts files in a tray
// under the composer; Send stages them (one request, `?attach=true`, so
// the agent gets them with the message rather than each alone) and then
// sends one message whose `file` parts name them. Files dropped on the
// chat or picked with "Attach files" still go at once, each on its own.

import { errorOf, NETWORK_DOWN, wsPath } from './api.js';
import { $, el, formatSize } from './dom.js';
import { maxUploadBytes } from './config.js';
import { state } from './state.js';

/** The files waiting in the tray, in the order they were chosen. */
let tray = [];

function paintTray() {
  const list = $('attach-tray');
  list.replaceChildren(...tray.map((file, i) => el('li', { class: 'chip', dataset: { name: file.name } },
    el('span', { class: 'chip-name' }, file.name),
    el('span', { class: 'hint' }, formatSize(file.size)),
    el('button', {
      type: 'button',
      class: 'ghost',
      'aria-label': `Remove ${file.name} from the files going with the text`,
      onclick: () => {
        tray.splice(i, 1);
        paintTray();
        $('message').focus();
      },
    }, 'Remove'))));
  list.hidden = tray.length === 0;
}

/** Whether files wait to go with the next message. */
export function hasAttachments() {
  return tray.length > 0;
}

/** Empties the tray (after a send, or when another chat opens). */
export function clearAttachments() {
  tray = [];
  paintTray();
}

/**
 * Stages the tray's files for workspace `wsId` in one request; answers
 * the message's `file` parts (name, type and the URI the server gave).
 * Throws an Error with the server's sentence; the tray is kept then.
 */
export async function stageAttachments(wsId) {
  if (!tray.length) return [];
  const max = maxUploadBytes();
  const big = tray.find((f) => max && f.size > max);
  if (big) throw new Error(`${big.name} is ${formatSize(big.size)}; this server accepts files up to ${formatSize(max)}`);
  const form = new FormData();
  for (const f of tray) form.append('files', f, f.name);
  let res;
  try {
    res = await fetch(wsPath(wsId, '/chat/uploads?attach=true'), {
      method: 'POST',
      headers: { Authorization: `Bearer ${state.token}` },
      body: form,
    });
  } catch {
    throw new Error(NETWORK_DOWN);
  }
  if (!res.ok) throw await errorOf(res);
  const { files } = await res.json();
  return files.map((f) => ({ kind: 'file', file: { uri: f.uri, name: f.name, mimeType: f.mimeType } }));
}

/** Wires the tray's picker; called once at start. */
export function initAttach() {
  paintTray();
  $('attach-input').addEventListener('change', (e) => {
    tray.push(...e.target.files);
    e.target.value = ''; // choosing the same file again fires change again
    paintTray();
  });
}
