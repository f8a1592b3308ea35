// Health: the top bar's warning when work on a clock is not happening.
// Two things are worth interrupting the operator for: the scheduler loop
// has stopped (no tick for longer than its stall bound; the server's
// /ready answers 503 then), or schedules have gone stale (no fire for
// more than twice their interval, e.g. a paused workspace or a fire that
// keeps being skipped). Read from GET /admin/schedules/health once a
// minute while signed in, and again whenever the tab comes back into view
// (a laptop waking up); the warning names what is wrong and links to the
// first stale schedule's workspace. A failed read says nothing (the list's
// own refresh already reports an unreachable server).

import { api } from './api.js';
import { $, ago, el } from './dom.js';
import { serverNow, state } from './state.js';

const HEALTH_REFRESH_MS = 60_000;
const NAMED = 3; // stale schedules named in the warning; the rest are counted

let timer = null;

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && timer !== null) checkHealth();
});

/** The warning's text and link for one health answer, or null when all is well. */
export function healthWarning(health, workspaces = []) {
  const parts = [];
  const { scheduler, counts, schedules } = health;
  if (scheduler?.stalled) {
    const last = scheduler.last_tick_at ? `last tick ${ago(scheduler.last_tick_at, serverNow())}` : 'it has not ticked';
    parts.push(`The scheduler has stopped (${last}): no schedule fires until it runs again.`);
  }
  const stale = (schedules || []).filter((s) => s.status === 'stale');
  const count = counts?.stale ?? stale.length;
  if (count > 0) {
    const name = (s) => {
      const ws = workspaces.find((w) => w.id === s.workspace_id);
      return ws ? `${s.name} (${ws.name})` : s.name;
    };
    const named = stale.slice(0, NAMED).map(name).join(', ');
    const more = count > NAMED ? ` and ${count - NAMED} more` : '';
    parts.push(`${count} ${count === 1 ? 'schedule has' : 'schedules have'} not fired for over twice ${count === 1 ? 'its' : 'their'} interval: ${named}${more}.`);
  }
  if (!parts.length) return null;
  return { text: parts.join(' '), workspaceId: stale[0]?.workspace_id || null };
}

let checks = 0;

function render(warning) {
  const box = $('health-warning');
  box.dataset.checks = String(++checks); // how many answers it has drawn
  box.replaceChildren();
  box.hidden = !warning;
  if (!warning) return;
  box.append(el('span', {}, warning.text));
  if (warning.workspaceId) {
    box.append(' ', el('a', { href: `#/w/${warning.workspaceId}`, class: 'health-link' }, 'Open'));
  }
}

/** Reads the health once and shows or clears the warning. */
export async function checkHealth() {
  if (!state.token) return;
  try {
    render(healthWarning(await api('/admin/schedules/health'), state.workspaces));
  } catch {
    // Unreachable or refused: the list's refresh says so; keep what shows.
  }
}

/** Starts the minute-by-minute check (again on each sign-in). */
export function startHealth() {
  clearInterval(timer);
  checkHealth();
  timer = setInterval(checkHealth, HEALTH_REFRESH_MS);
}

/** Stops checking and clears the warning (sign-out). */
export function stopHealth() {
  clearInterval(timer);
  timer = null;
  render(null);
}
