// The open workspace's lifecycle, in the chat header: what its agent is
// working on (the heartbeat's `current_task` and `active_tasks`), and the
// operator's Pause delivery / Resume delivery (while paused, messages wait
// on the server, `queued`, and reach the agent in order on resume) and
// Restart agent (with a confirm: `molecule connect` registers again, stops
// a command in flight and reports back, which resolves the note).
//
// Heartbeats carry no event on the chat's stream, so while a chat is open
// the page re-reads that one workspace every few seconds; the list's own
// refresh (every 20 s) updates it too.

import { api, wsPath } from './api.js';
import { $, el } from './dom.js';
import { agentStatus, bus, state } from './state.js';
import { renderWorkspaces } from './workspaces.js';

const OPEN_REFRESH_MS = 5_000;
/** The workspace whose restart the note waits to see confirmed. */
let restartOf = null;

/**
 * The header's task line: "working… summarizing the report · 2 tasks"
 * while the heartbeat counts tasks in flight; "reported task: …" when it
 * names a task but counts none (an agent may report only the one, and a
 * restart zeroes the count but not the name); '' otherwise.
 */
function taskText(ws) {
  const tasks = ws.active_tasks || 0;
  const task = (ws.current_task || '').trim();
  // An agent that is not online is not known to be working, whatever its
  // last heartbeat claimed (the sweeper resets such phantom tasks).
  if (agentStatus(ws) !== 'online') return '';
  if (!tasks) return task ? `reported task: ${task}` : '';
  const text = task ? `working… ${task}` : 'working…';
  return tasks > 1 ? `${text} · ${tasks} tasks` : text;
}

/** Replaces the workspace in the list with the server's newer copy and redraws. */
function adopt(fresh) {
  const i = state.workspaces.findIndex((w) => w.id === fresh.id);
  if (i >= 0) state.workspaces[i] = fresh;
  if (state.current?.id === fresh.id) state.current = fresh;
  renderWorkspaces();
}

/** Paints the header's working line and the buttons for the open workspace. */
function paint() {
  const ws = state.current;
  $('lifecycle').hidden = !ws;
  if (!ws) {
    $('chat-task').hidden = true;
    $('chat-task').textContent = '';
    $('lifecycle-status').textContent = '';
    return;
  }
  const working = taskText(ws);
  if ($('chat-task').textContent !== working) $('chat-task').textContent = working;
  $('chat-task').hidden = !working;
  const pause = $('pause-toggle');
  const verb = ws.paused ? 'Resume' : 'Pause';
  // On a phone only the verb shows (the name keeps " delivery": .wide-only).
  if (pause.textContent !== `${verb} delivery`) pause.replaceChildren(verb, el('span', { class: 'wide-only' }, ' delivery'));
}

/** The note once the agent confirmed its restart. */
function restartedText(ws) {
  return `Restarted: ${ws.name}'s agent registered again and confirmed.`;
}

/** Runs one lifecycle call for the open workspace, saying how it went. */
async function act(button, path, done) {
  const ws = state.current;
  if (!ws) return;
  const status = $('lifecycle-status');
  status.classList.remove('error');
  button.disabled = true;
  try {
    adopt(await api(wsPath(ws.id, path), { method: 'POST' }));
    status.textContent = done(ws);
  } catch (e) {
    status.classList.add('error');
    status.textContent = `Could not ${path.slice(1)} ${ws.name}: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

/** Re-reads the open workspace (its heartbeat's task and count). */
async function refreshOpen() {
  const ws = state.current;
  if (!ws || document.visibilityState !== 'visible') return;
  try {
    const fresh = await api(wsPath(ws.id));
    if (state.current?.id === fresh.id) adopt(fresh);
  } catch {
    // The list's refresh and the chat's stream report what is wrong.
  }
}

/** Wires the header's lifecycle controls; called once at start. */
export function initLifecycle() {
  bus.addEventListener('workspaces', paint);
  bus.addEventListener('tick', paint);
  // After the router (registered first) opened or closed a chat: the
  // buttons follow at once, not at the next tick.
  window.addEventListener('hashchange', () => {
    $('lifecycle-status').textContent = '';
    paint();
  });
  setInterval(refreshOpen, OPEN_REFRESH_MS);

  $('pause-toggle').addEventListener('click', (e) => {
    const paused = state.current?.paused;
    act(e.currentTarget, paused ? '/resume' : '/pause', (ws) => (paused
      ? `${ws.name} resumed: messages that waited are delivered now, in order.`
      : `${ws.name} paused: new messages and files wait on the server (queued) until you resume delivery.`));
  });

  $('restart').addEventListener('click', (e) => {
    const ws = state.current;
    if (!ws) return;
    const sure = window.confirm(`Restart ${ws.name}'s agent? molecule connect registers again, re-reads its `
      + 'instructions and stops a command in flight (its message is handed over again); active tasks are reset to 0.');
    if (!sure) return;
    restartOf = ws.id;
    // A quick agent may confirm before the request's own answer is read:
    // the note must not go back to waiting then.
    act(e.currentTarget, '/restart', (w) => (restartOf === w.id
      ? `Restart requested: waiting for ${w.name}'s agent to confirm…`
      : restartedText(w)));
  });

  // The agent's `restart_done` row resolves the note.
  bus.addEventListener('activity-row', (e) => {
    const row = e.detail;
    if (row.activity_type !== 'restart_done' || row.workspace_id !== restartOf || state.current?.id !== restartOf) return;
    restartOf = null;
    const status = $('lifecycle-status');
    status.classList.remove('error');
    status.textContent = restartedText(state.current);
  });
}
