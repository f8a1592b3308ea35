// Upload chips: the row of a file in the conversation, and where its
// hand-off to the agent stands (staged → fetched → acked, or expired).

import { ApiError, NETWORK_DOWN, api, errorOf, wsPath } from './api.js';
import { el, formatSize } from './dom.js';
import { state } from './state.js';
import { keepThumbOf, keptThumb } from './thumbs.js';

// Hand-off states of a staged file, in the only order they can move.
const UPLOAD_RANK = { staged: 1, fetched: 2, acked: 3, expired: 3, gone: 3 };
const UPLOAD_LABEL = {
  staged: 'waiting for the agent',
  // The agent's download started (only the workspace's own counts, not
  // the operator's); it ends with the ack, once the file is on its disk.
  // The server does not report the download's progress.
  fetched: 'the agent is downloading',
  acked: 'delivered',
  expired: 'expired',
  // Seen only for history: the sweep already removed the file's record
  // (an hour after delivery, or once expired), so its fate is not known.
  gone: 'delivered or expired',
};

/** The chip of one staged file (`data` of its chat_upload_receive row). */
export function uploadChip(data) {
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
  if (state.thumbs.has(fileId)) addThumbnail(chip, state.thumbs.get(fileId));
  else if (keptThumb(fileId)) setThumbnail(fileId, keptThumb(fileId));
  else if (/^image\//.test(data.mimetype || '') && data.size <= THUMB_MAX_BYTES) fetchThumbnail(fileId, chip);
  return chip;
}

const THUMB_MAX_BYTES = 4 * 1024 * 1024;

function addThumbnail(chip, url) {
  if (chip.querySelector('.thumb')) return;
  chip.prepend(el('img', { class: 'thumb', src: url, alt: '', width: 48, height: 48 }));
}

/** The thumbnail of a just-dropped image: the page's own copy, no download. */
export function setThumbnail(fileId, url) {
  state.thumbs.set(fileId, url);
  const chip = state.chips.get(fileId);
  if (chip) addThumbnail(chip, url);
}

/**
 * An image from history that this browser keeps no thumbnail of: its bytes
 * while the server still holds them (the operator's download does not count
 * as the agent's), kept small for after the delivery. Once delivered they
 * are gone, and only a kept thumbnail shows (thumbs.js).
 */
async function fetchThumbnail(fileId, chip) {
  const ws = state.current;
  try {
    const res = await fetch(wsPath(ws.id, `/pending-uploads/${encodeURIComponent(fileId)}/content`), {
      headers: { Authorization: `Bearer ${state.token}` },
      cache: 'no-store',
    });
    if (!res.ok || state.current?.id !== ws.id) return;
    const blob = await res.blob();
    setThumbnail(fileId, URL.createObjectURL(blob));
    keepThumbOf(fileId, blob);
  } catch {
    // no thumbnail
  }
}

function paintChip(chip, s) {
  chip.dataset.state = s;
  chip.querySelector('.chip-state').textContent = UPLOAD_LABEL[s] || s;
  // The bytes are on the server only until the agent acknowledges them.
  chip.querySelector('.chip-download').hidden = !(s === 'staged' || s === 'fetched');
}

/** Moves a file's state forward (never back: events may arrive late or twice). */
export function setUploadState(fileId, s) {
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
export async function reconcileUploads(wsId, signal) {
  const all = await api(wsPath(wsId, '/pending-uploads?include=all'), { signal });
  const known = new Map(all.map((p) => [p.file_id, p.state]));
  for (const fileId of state.chips.keys()) {
    setUploadState(fileId, known.get(fileId) || 'gone');
  }
}

/**
 * Fetches a staged file's bytes with the bearer token (a plain link cannot
 * carry it) and hands the browser a blob URL to save. Throws ApiError.
 */
async function saveStaged(wsId, fileId, filename) {
  let res;
  try {
    res = await fetch(wsPath(wsId, `/pending-uploads/${encodeURIComponent(fileId)}/content`), {
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
}

async function downloadStaged(fileId, filename, chip) {
  const error = chip.querySelector('.chip-error');
  error.textContent = '';
  try {
    await saveStaged(state.current.id, fileId, filename);
  } catch (e) {
    error.textContent = e.status === 404 ? 'No longer on the server: delivered or expired.' : e.message;
    if (e.status === 404) setUploadState(fileId, 'gone');
  }
}

/**
 * The chip of a file the agent sent the user (an attachment naming
 * `platform-pending:<ws>/<fid>`, uploaded to its own chat): its name, size
 * and a Download button. Null for any other URI.
 */
export function agentFileChip(a) {
  const m = /^platform-pending:([^/]+)\/(.+)$/.exec(a.uri || '');
  if (!m) return null;
  const [, wsId, fileId] = m;
  const name = a.name || 'file';
  const error = el('span', { class: 'error chip-error', role: 'alert' });
  const download = el('button', {
    type: 'button',
    class: 'chip-download',
    'aria-label': `Download ${name}`,
    onclick: async () => {
      error.textContent = '';
      try {
        await saveStaged(wsId, fileId, name);
      } catch (e) {
        error.textContent = e.status === 404 ? 'No longer on the server: expired.' : e.message;
      }
    },
  }, 'Download');
  return el('li', { class: 'chip', dataset: { fileId } },
    el('span', { class: 'chip-name' }, name),
    Number.isFinite(a.size) ? el('span', { class: 'hint' }, formatSize(a.size)) : null,
    download, error);
}
