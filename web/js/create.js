// The "New workspace" panel and the connection dialog: what to run or set
// up on the agent's side. The dialog is wide enough for the whole command
// (one argument per line, never broken inside a URL, an id or the token),
// and closing it removes the token from the page: it is shown only once.

import { api } from './api.js';
import { $ } from './dom.js';
import { state } from './state.js';
import { teamFields } from './teamform.js';
import { focusRow, refreshWorkspaces } from './workspaces.js';

/**
 * The connect line — `(umask 077 && mkdir -p ~/.molecule && echo T > F) &&
 * molecule connect --server U --workspace I --token-file F --dir .` —
 * laid out one step and one flag per line with shell continuations, so it
 * fits without wrapping and still pastes as one command.
 */
export function layOutCommand(command) {
  return command.replace(/ (?=--|&& |> )/g, ' \\\n  ');
}

/**
 * Opens the dialog for `ws` with its `connection` block. A poll workspace
 * gets the `molecule connect` command; a push workspace is reached at its
 * URL instead, so it gets what its agent needs to call back.
 */
export function showConnection(ws, connection, { created = false } = {}) {
  const token = connection.auth_token;
  const intro = $('connection-intro');
  const box = $('connect-command');
  const what = created ? `${ws.name} was created.` : `${ws.name}:`;
  const onceNote = token
    ? ' The token is shown only this once: it is removed from the page when you close this.'
    : ' The token is not shown again: rotate it to get a new one.';
  if (ws.delivery_mode === 'push') {
    intro.textContent = `${what} This server delivers each message to ${ws.url} (a JSON-RPC POST; the agent's `
      + `answer is the reply) and each file to ${ws.url}/internal/chat/uploads/ingest. Nothing needs to run `
      + `here; to write to this chat on its own, the agent calls POST ${connection.platform_url}/workspaces/`
      + `${connection.workspace_id}/notify with the token below.${onceNote}`;
    $('connect-command-label').textContent = 'Settings for the agent';
    box.value = [
      `server:    ${connection.platform_url}`,
      `workspace: ${connection.workspace_id}`,
      `token:     ${token || '<token>'}`,
    ].join('\n');
    $('copy-command').textContent = 'Copy the settings';
  } else {
    intro.textContent = `${what} Run this on the agent's machine (it connects out, so no public URL is needed).${onceNote}`;
    $('connect-command-label').textContent = 'Command';
    box.value = layOutCommand(connection.connect_command);
    $('copy-command').textContent = 'Copy the command';
  }
  box.rows = box.value.split('\n').length;
  showMcpConfig(connection);
  $('copy-status').textContent = '';
  const dialog = $('connection-dialog');
  dialog.dataset.ws = ws.id;
  if (!dialog.open) dialog.showModal();
  box.focus();
  box.select();
}

/**
 * The `mcpServers` block of the connection (the token is `${MOLECULE_TOKEN}`,
 * never the token itself), with how to put the token in that variable.
 */
function showMcpConfig(connection) {
  const block = $('mcp-block');
  block.hidden = !connection.mcp_config;
  if (block.hidden) return;
  const tokenFile = `~/.molecule/${connection.workspace_id}.token`;
  const text = [
    '# .mcp.json (Claude Code) or the mcpServers block of any MCP client.',
    '# Start the client with the token in its environment:',
    `#   export MOLECULE_TOKEN="$(cat ${tokenFile})"`,
    JSON.stringify(connection.mcp_config, null, 2),
  ].join('\n');
  const area = $('mcp-config');
  area.value = text;
  area.rows = text.split('\n').length;
}

/** Wires the create form, the copy button and the dialog; called once at start. */
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
    const body = { name, delivery_mode: form.delivery_mode.value, ...teamFields() };
    const url = form.url.value.trim();
    if (body.delivery_mode === 'push' && url) body.url = url;
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const created = await api('/workspaces', { method: 'POST', body });
      form.reset();
      $('url-field').hidden = true;
      showConnection(created, created.connection, { created: true });
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
      status.textContent = 'Select and copy the text above (Ctrl+C / ⌘C): the browser refused clipboard access.';
    }
  });

  const dialog = $('connection-dialog');
  $('close-connection').addEventListener('click', () => dialog.close());
  // However it closes (the button, Escape), the token leaves the page.
  dialog.addEventListener('close', () => {
    $('connect-command').value = '';
    $('connection-intro').textContent = '';
    $('copy-status').textContent = '';
    // Focus goes where the work continues (the browser would put it on
    // <body>: the button that opened the dialog was disabled or is gone):
    // the open chat's composer, else the workspace's row in the list.
    const id = dialog.dataset.ws;
    if (state.current?.id === id) $('message').focus();
    else if (!focusRow(id)) $('ws-filter').focus();
  });
}
