// The "New workspace" panel: the create form and the connection block it
// shows once (the workspace token is never shown again).

import { api } from './api.js';
import { $ } from './dom.js';
import { refreshWorkspaces } from './workspaces.js';

/** Wires the create form and the copy button; called once at start. */
export function initCreate() {
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
}
