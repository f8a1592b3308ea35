// Team operations (issue 30, missing 8), from the open workspace's header
// ("Team…", beside Pause and Restart): move the workspace, with its team,
// under another parent (PATCH /workspaces/:id {parent_id}; the server
// refuses a cycle and says why), and pause or resume the whole team (the
// workspace and everyone below it), each after a confirmation that names
// what changes. Only what would change is touched: a paused member is not
// paused again.

import { api, wsPath } from './api.js';
import { $, el } from './dom.js';
import { state } from './state.js';
import { refreshWorkspaces } from './workspaces.js';

/** `ws` and every live workspace below it, parents first. */
function teamOf(ws) {
  const out = [ws];
  const seen = new Set([ws.id]);
  for (let i = 0; i < out.length; i += 1) {
    for (const w of state.workspaces) {
      if (w.parent_id === out[i].id && !seen.has(w.id)) {
        seen.add(w.id);
        out.push(w);
      }
    }
  }
  return out;
}

const names = (list) => list.map((w) => w.name).join(', ');

/** Builds the dialog and its header button once. */
export function initTeamOps() {
  const title = el('h2', { id: 'teamops-title', tabindex: '-1' }, 'Team');
  const parent = el('select', { id: 'teamops-parent' });
  const move = el('button', { type: 'button', id: 'teamops-move' }, 'Move…');
  const members = el('p', { class: 'hint', id: 'teamops-members' });
  const pause = el('button', { type: 'button', id: 'teamops-pause' }, 'Pause the team…');
  const resume = el('button', { type: 'button', id: 'teamops-resume' }, 'Resume the team…');
  const status = el('p', { class: 'hint', role: 'status', id: 'teamops-status' });
  const error = el('p', { class: 'error', role: 'alert', id: 'teamops-error' });
  const close = el('button', { type: 'button', class: 'ghost' }, 'Close');
  const dialog = el('dialog', { id: 'teamops-dialog', class: 'connection-dialog teamops', 'aria-labelledby': 'teamops-title' },
    el('div', { class: 'dialog-head' }, title, close),
    el('section', { 'aria-labelledby': 'teamops-move-title' },
      el('h3', { id: 'teamops-move-title', class: 'panel-subtitle' }, 'Move'),
      el('label', { for: 'teamops-parent' }, 'Move under'), parent, move),
    el('section', { 'aria-labelledby': 'teamops-pause-title' },
      el('h3', { id: 'teamops-pause-title', class: 'panel-subtitle' }, 'Pause or resume everyone'),
      members, el('div', { class: 'row' }, pause, resume)),
    status, error);
  document.querySelector('main').append(dialog);
  const open = el('button', { type: 'button', id: 'team-ops', class: 'ghost' }, 'Team…');
  $('restart').after(open);

  function fill() {
    const ws = state.current;
    if (!ws) return;
    const team = teamOf(ws);
    const inside = new Set(team.map((w) => w.id));
    title.textContent = `Team of ${ws.name}`;
    // A workspace cannot move under itself or anyone below it.
    parent.replaceChildren(el('option', { value: '' }, '(top level)'),
      ...state.workspaces.filter((w) => !inside.has(w.id))
        .map((w) => el('option', { value: w.id, selected: w.id === ws.parent_id }, w.name)));
    if (!ws.parent_id) parent.value = '';
    members.textContent = `${team.length} workspace${team.length === 1 ? '' : 's'}: ${names(team)}.`;
    const paused = team.filter((w) => w.paused).length;
    pause.textContent = `Pause the team (${team.length - paused})…`;
    resume.textContent = `Resume the team (${paused})…`;
    pause.disabled = paused === team.length;
    resume.disabled = paused === 0;
  }

  async function act(button, run) {
    button.disabled = true;
    error.textContent = '';
    status.textContent = '';
    try {
      await run();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      await refreshWorkspaces().catch(() => {});
      state.current = state.workspaces.find((w) => w.id === state.current?.id) || state.current;
      button.disabled = false;
      fill();
    }
  }

  open.addEventListener('click', () => {
    status.textContent = '';
    error.textContent = '';
    fill();
    dialog.showModal();
    title.focus();
  });
  close.addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => open.focus());

  move.addEventListener('click', () => act(move, async () => {
    const ws = state.current;
    const to = parent.value;
    if ((ws.parent_id || '') === to) {
      status.textContent = `${ws.name} is already there.`;
      return;
    }
    const below = teamOf(ws).length - 1;
    const where = (id) => (id ? `under ${state.workspaces.find((w) => w.id === id)?.name || id}` : 'at the top level');
    const sure = window.confirm(`Move ${ws.name}${below ? ` and the ${below} below it` : ''} from ${where(ws.parent_id)} `
      + `to ${where(to)}? Who it may delegate to follows its new place.`);
    if (!sure) return;
    await api(wsPath(ws.id), { method: 'PATCH', body: { parent_id: to || null } });
    status.textContent = `Moved ${ws.name} ${where(to)}.`;
  }));

  /** Pauses (or resumes) every member not already so, naming them first. */
  function bulk(button, pausing) {
    return act(button, async () => {
      const team = teamOf(state.current).filter((w) => Boolean(w.paused) !== pausing);
      if (!team.length) return;
      const verb = pausing ? 'Pause' : 'Resume';
      const sure = window.confirm(`${verb} ${team.length} workspace${team.length === 1 ? '' : 's'}: ${names(team)}? `
        + (pausing ? 'Messages are held for them until they are resumed.' : 'Held messages are delivered again.'));
      if (!sure) return;
      const failed = [];
      for (const w of team) {
        try {
          await api(wsPath(w.id, pausing ? '/pause' : '/resume'), { method: 'POST' });
        } catch (e) {
          failed.push(`${w.name} (${e.message})`);
        }
      }
      const done = team.length - failed.length;
      status.textContent = `${pausing ? 'Paused' : 'Resumed'} ${done} of ${team.length}.`;
      if (failed.length) error.textContent = `Not ${pausing ? 'paused' : 'resumed'}: ${failed.join('; ')}`;
    });
  }
  pause.addEventListener('click', () => bulk(pause, true));
  resume.addEventListener('click', () => bulk(resume, false));
}
