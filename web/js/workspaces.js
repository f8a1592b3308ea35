// The workspace list: read from GET /workspaces, drawn as links to each
// workspace's chat, refreshed on a timer and on demand.

import { api } from './api.js';
import { $, ago, el } from './dom.js';
import { STATUS_LABEL, bus, state } from './state.js';

/** Re-reads the list and redraws it; throws the ApiError after showing it. */
export async function refreshWorkspaces() {
  try {
    state.workspaces = await api('/workspaces');
    $('workspaces-error').textContent = '';
  } catch (e) {
    if (e.status !== 401) $('workspaces-error').textContent = `Could not load the workspaces: ${e.message}`;
    throw e;
  }
  renderWorkspaces();
}

function statusBadge(ws) {
  return el('span', { class: `status status-${ws.status}` }, STATUS_LABEL[ws.status] || ws.status);
}

/** Draws `state.workspaces`, keeping the keyboard focus where it was. */
export function renderWorkspaces() {
  const list = $('workspace-list');
  const focusedId = document.activeElement?.closest?.('[data-ws]')?.dataset.ws;
  list.replaceChildren(
    ...state.workspaces.map((ws) => {
      const heartbeat = ws.last_heartbeat_at
        ? el('span', { class: 'hint', title: new Date(ws.last_heartbeat_at).toLocaleString() },
          `last heartbeat ${ago(ws.last_heartbeat_at)}`)
        : null;
      const link = el('a', {
        href: `#/w/${ws.id}`,
        class: 'workspace',
        dataset: { ws: ws.id },
        'aria-current': state.current?.id === ws.id ? 'page' : null,
      },
      el('span', { class: 'ws-name' }, ws.name),
      el('span', { class: 'ws-meta' },
        el('span', { class: `mode mode-${ws.delivery_mode}` }, ws.delivery_mode),
        statusBadge(ws),
        heartbeat));
      return el('li', {}, link);
    }),
  );
  $('workspaces-empty').hidden = state.workspaces.length > 0;
  if (focusedId) list.querySelector(`[data-ws="${CSS.escape(focusedId)}"]`)?.focus();
  bus.dispatchEvent(new Event('workspaces'));
}

/** Wires the Refresh button; called once at start. */
export function initWorkspaces() {
  $('refresh').addEventListener('click', () => refreshWorkspaces().catch(() => {}));
}
