// The "Manage" panel of the open workspace: rename it, change its push
// URL, show its connection block again, rotate its token, delete it (a
// lead with its whole team, named in the confirm). The two that cut
// something off (rotate, delete) ask first and say what happens.

import { api, wsPath } from './api.js';
import { $ } from './dom.js';
import { showConnection } from './create.js';
import { state } from './state.js';
import { refreshWorkspaces } from './workspaces.js';

function open() {
  const ws = state.current;
  if (!ws) return;
  $('manage-title').textContent = `Manage ${ws.name}`;
  $('manage-name').value = ws.name;
  $('manage-url-field').hidden = ws.delivery_mode !== 'push';
  $('manage-url').value = ws.url || '';
  $('manage-error').textContent = '';
  $('manage-status').textContent = '';
  $('manage-dialog').showModal();
  $('manage-name').focus();
}

/** Runs one action, showing its error in the panel; true when it worked. */
async function attempt(what, fn) {
  $('manage-error').textContent = '';
  $('manage-status').textContent = '';
  try {
    await fn();
    return true;
  } catch (e) {
    $('manage-error').textContent = `Could not ${what}: ${e.message}`;
    return false;
  }
}

/** Wires the Manage button and its panel; called once at start. */
export function initManage() {
  $('manage').addEventListener('click', open);
  $('manage-close').addEventListener('click', () => $('manage-dialog').close());

  $('manage-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const ws = state.current;
    const body = { name: $('manage-name').value.trim() };
    if (!body.name) {
      $('manage-error').textContent = 'Give the workspace a name.';
      return;
    }
    if (ws.delivery_mode === 'push') body.url = $('manage-url').value.trim();
    const ok = await attempt('save the changes', async () => {
      await api(wsPath(ws.id), { method: 'PATCH', body });
      await refreshWorkspaces();
    });
    if (ok) {
      // The title names the workspace as it is now, not as it was opened.
      $('manage-title').textContent = `Manage ${state.current?.name ?? body.name}`;
      $('manage-status').textContent = 'Saved.';
    }
  });

  $('manage-connection').addEventListener('click', async () => {
    const ws = state.current;
    await attempt('read the connection block', async () => {
      const { connection } = await api(wsPath(ws.id, '/external/connection'));
      $('manage-dialog').close();
      showConnection(ws, connection);
    });
  });

  $('manage-rotate').addEventListener('click', async () => {
    const ws = state.current;
    const sure = window.confirm(`Rotate the token of ${ws.name}? Its current token stops working at once: `
      + 'the agent is cut off until it runs with the new one.');
    if (!sure) return;
    await attempt('rotate the token', async () => {
      const { connection } = await api(wsPath(ws.id, '/external/rotate'), { method: 'POST' });
      $('manage-dialog').close();
      showConnection(ws, connection);
    });
  });

  $('manage-delete').addEventListener('click', async () => {
    const ws = state.current;
    const team = subtreeOf(ws);
    const sure = window.confirm(team.length === 0
      ? `Delete ${ws.name}? Its tokens stop working and it leaves the list; this cannot be undone.`
      : `Delete the whole team (${team.length + 1})? ${ws.name} and ${listNames(team)}: every token `
        + 'stops working and they all leave the list; this cannot be undone.');
    if (!sure) return;
    await attempt(team.length === 0 ? 'delete the workspace' : 'delete the team', async () => {
      const query = team.length === 0 ? '' : '?cascade=true';
      await api(`${wsPath(ws.id)}${query}`, { method: 'DELETE' });
      $('manage-dialog').close();
      location.hash = '';
      await refreshWorkspaces();
      // The work goes on in the list: focus it rather than the page's body.
      $('ws-filter').focus();
    });
  });
}

/** The workspaces listed under `ws` (its whole team, every level), nearest first. */
function subtreeOf(ws) {
  const seen = new Set([ws.id]);
  const out = [];
  let level = [ws.id];
  while (level.length > 0) {
    const next = state.workspaces.filter((w) => level.includes(w.parent_id) && !seen.has(w.id));
    next.forEach((w) => seen.add(w.id));
    out.push(...next);
    level = next.map((w) => w.id);
  }
  return out;
}

/** "a, b and c", or "a, b, c and 4 more" past five names. */
function listNames(ws) {
  const names = ws.map((w) => w.name);
  if (names.length > 5) return `${names.slice(0, 5).join(', ')} and ${names.length - 5} more`;
  if (names.length === 1) return names[0];
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}
