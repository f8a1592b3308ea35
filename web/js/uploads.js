// Sending files: the file picker and drag-and-drop over the chat, one
// request per file with its own progress bar, cancel and error.

import { NETWORK_DOWN, unauthorized, wsPath } from './api.js';
import { maxUploadBytes } from './config.js';
import { $, el, formatSize } from './dom.js';
import { setThumbnail } from './chips.js';
import { bus, state } from './state.js';
import { keepThumbOf } from './thumbs.js';

/** "1 MiB" rather than "1.0 MiB": a limit reads as a round number. */
const limitText = (bytes) => formatSize(bytes).replace(/\.0 /, ' ');

/** Shows the server's file limit next to the file picker, before any upload. */
function paintLimit() {
  const max = maxUploadBytes();
  $('upload-limit').textContent = max ? ` · up to ${limitText(max)} per file` : '';
}

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

  const fail = (message, retryable = true) => {
    item.classList.add('failed');
    item.dataset.status = 'failed';
    bar.remove();
    pct.remove();
    error.textContent = message;
    cancel.textContent = 'Dismiss';
    cancel.onclick = () => item.remove();
    // The same file again, from the same File object (no re-picking);
    // not for a refusal that would only repeat (too large).
    if (retryable) {
      cancel.before(el('button', {
        type: 'button',
        class: 'retry',
        'aria-label': `Retry ${file.name}`,
        onclick: () => {
          item.remove();
          if (state.current?.id === ws.id) uploadFile(file);
        },
      }, 'Retry'));
    }
    // Keep the pane scrolled to the message.
    item.scrollIntoView({ block: 'nearest' });
  };

  // Refused here, before a byte is sent: waiting for the server's 413
  // would cost the whole upload first.
  const max = maxUploadBytes();
  if (max && file.size > max) {
    fail(`Too large: ${file.name} is ${formatSize(file.size)}; this server accepts files up to `
      + `${limitText(max)}. Nothing was sent.`, false);
    return;
  }

  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return;
    const p = Math.round((e.loaded / e.total) * 100);
    bar.value = p;
    pct.textContent = `${p} %`;
  });
  xhr.addEventListener('load', () => {
    if (xhr.status >= 200 && xhr.status < 300) {
      // The chip arrives with the activity row on the event stream, in
      // both modes (push mode records the files the workspace took).
      item.remove();
      if (file.type.startsWith('image/')) thumbnailFromAnswer(xhr.responseText, file);
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
    if (xhr.status === 401) unauthorized();
    fail(prefix + message, xhr.status !== 413 && xhr.status !== 400);
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

/**
 * A staged image's chip shows the dropped file itself as its thumbnail; a
 * small copy is kept for after a reload, when the server may no longer
 * hold the file (thumbs.js).
 */
function thumbnailFromAnswer(text, file) {
  try {
    const [answer] = JSON.parse(text).files || [];
    const fileId = /^platform-pending:[^/]+\/(.+)$/.exec(answer?.uri || '')?.[1];
    if (!fileId) return;
    setThumbnail(fileId, URL.createObjectURL(file));
    keepThumbOf(fileId, file);
  } catch {
    // no answer to read: no thumbnail
  }
}

function uploadFiles(files) {
  if (!state.current) return;
  for (const f of files) uploadFile(f);
}

/** Wires the file picker and drag-and-drop; called once at start. */
export function initUploads() {
  bus.addEventListener('config', paintLimit);
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
}
