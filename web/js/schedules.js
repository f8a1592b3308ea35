// Schedules: the Schedules tab of a workspace. Lists its schedules with the
// next run in the reader's own time and the last fire's status; adds and
// edits one in a form whose cron field shows the next five fire times as
// it is typed (GET /schedules/preview: the server's own parser, so the
// page never disagrees with the scheduler); runs one now; shows a
// schedule's history with delivered, answered, failed, skipped and missed
// told apart, each with its reason and a link to its ledger row.

import { api, wsPath } from './api.js';
import { ago, dateFormat, el } from './dom.js';
import { serverNow, state } from './state.js';
import { registerTab } from './tabs.js';

const PREVIEW_DELAY_MS = 250;
const HISTORY_LIMIT = 50;
const OVERLAP = {
  skip: 'Skip a fire while the previous one runs',
  buffer_one: 'Keep one waiting fire',
  allow_all: 'Fire every time',
};
const FIRE_LABEL = {
  delivered: 'delivered', answered: 'answered', failed: 'failed', skipped: 'skipped', missed: 'missed',
};
// Full date and time in the reader's zone, with the zone named.
const LOCAL = dateFormat({
  weekday: 'short', year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', timeZoneName: 'short',
});
const localTime = (iso) => LOCAL.format(new Date(iso));
const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

function fireChip(status) {
  return el('span', { class: `fchip fchip-${status}`, dataset: { status } }, FIRE_LABEL[status] || status);
}

/** The form's fields, made once; `fill(schedule | null)` resets it. */
function scheduleForm(onSaved) {
  const ids = (n) => `sched-${n}`;
  const name = el('input', { id: ids('name'), name: 'name', maxlength: '200', autocomplete: 'off', placeholder: 'Daily report' });
  const cron = el('input', {
    id: ids('cron'), name: 'cron_expr', autocomplete: 'off', spellcheck: 'false', placeholder: '0 9 * * 1-5',
    'aria-describedby': ids('cron-hint'),
  });
  const zone = el('input', { id: ids('zone'), name: 'timezone', autocomplete: 'off', spellcheck: 'false' });
  const prompt = el('textarea', { id: ids('prompt'), name: 'prompt', rows: '3' });
  const overlap = el('select', { id: ids('overlap'), name: 'overlap' },
    ...Object.entries(OVERLAP).map(([v, text]) => el('option', { value: v }, text)));
  const enabled = el('input', { id: ids('enabled'), name: 'enabled', type: 'checkbox' });
  const preview = el('ol', { id: ids('preview'), class: 'sched-preview' });
  const previewNote = el('p', { class: 'hint', id: ids('preview-note'), 'aria-live': 'polite' });
  const error = el('p', { class: 'error', role: 'alert', id: ids('form-error') });
  const save = el('button', { type: 'submit', class: 'primary', id: ids('save') }, 'Add schedule');
  const cancel = el('button', { type: 'button', class: 'ghost', id: ids('cancel'), hidden: true }, 'Cancel the edit');
  const title = el('h4', { id: ids('form-title'), class: 'panel-subtitle' }, 'Add a schedule');
  const form = el('form', { class: 'sched-form', novalidate: true, 'aria-labelledby': ids('form-title') },
    title,
    el('div', { class: 'field' }, el('label', { for: ids('name') }, 'Schedule name'), name),
    el('div', { class: 'field' }, el('label', { for: ids('cron') }, 'When (cron)'), cron,
      el('p', { class: 'hint', id: ids('cron-hint') },
        'Five fields — minute hour day-of-month month day-of-week — or @hourly, @daily, @weekly.')),
    el('div', { class: 'field' }, el('label', { for: ids('zone') }, 'Time zone'), zone),
    el('section', { class: 'sched-next', 'aria-labelledby': ids('next-title') },
      el('h5', { id: ids('next-title'), class: 'panel-subtitle' }, 'Next fire times (your time)'), previewNote, preview),
    el('div', { class: 'field' }, el('label', { for: ids('prompt') }, 'Prompt'), prompt),
    el('div', { class: 'field' }, el('label', { for: ids('overlap') }, 'While a fire still runs'), overlap),
    el('div', { class: 'field check' }, enabled, el('label', { for: ids('enabled') }, 'Enabled')),
    error,
    el('div', { class: 'panel-tools' }, save, cancel));

  let editing = null; // the schedule being edited, or null for a new one
  let timer = null;
  let asked = 0;

  async function showPreview() {
    const expr = cron.value.trim();
    const tz = zone.value.trim() || 'UTC';
    const mine = ++asked;
    if (!expr) {
      preview.replaceChildren();
      previewNote.textContent = 'Type an expression to see when it fires.';
      return;
    }
    try {
      const q = new URLSearchParams({ cron_expr: expr, timezone: tz, count: '5' });
      const { next } = await api(`/schedules/preview?${q}`);
      if (mine !== asked) return; // a later keystroke asked again
      preview.replaceChildren(...next.map((t) => el('li', {}, el('time', { datetime: t }, localTime(t)))));
      previewNote.textContent = next.length ? '' : 'It never fires.';
    } catch (e) {
      if (mine !== asked) return;
      preview.replaceChildren();
      previewNote.textContent = e.message;
    }
  }
  const schedulePreview = () => {
    clearTimeout(timer);
    timer = setTimeout(showPreview, PREVIEW_DELAY_MS);
  };
  cron.addEventListener('input', schedulePreview);
  zone.addEventListener('input', schedulePreview);

  function fill(s) {
    editing = s;
    name.value = s?.name ?? '';
    cron.value = s?.cron_expr ?? '';
    zone.value = s?.timezone ?? browserZone();
    prompt.value = s?.prompt ?? '';
    overlap.value = s?.overlap ?? 'skip';
    enabled.checked = s?.enabled ?? true;
    error.textContent = '';
    title.textContent = s ? `Edit ${s.name}` : 'Add a schedule';
    save.textContent = s ? 'Save changes' : 'Add schedule';
    cancel.hidden = !s;
    showPreview();
  }
  cancel.addEventListener('click', () => {
    fill(null);
    name.focus();
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    if (!cron.value.trim() || !prompt.value.trim()) {
      error.textContent = 'A schedule needs an expression (when) and a prompt (what the agent is asked).';
      (cron.value.trim() ? prompt : cron).focus();
      return;
    }
    const body = {
      cron_expr: cron.value.trim(), timezone: zone.value.trim() || 'UTC', prompt: prompt.value,
      overlap: overlap.value, enabled: enabled.checked,
    };
    if (name.value.trim()) body.name = name.value.trim();
    const ws = state.current;
    save.disabled = true;
    try {
      const saved = editing
        ? await api(wsPath(ws.id, `/schedules/${editing.id}`), { method: 'PATCH', body })
        : await api(wsPath(ws.id, '/schedules'), { method: 'POST', body });
      const verb = editing ? 'Saved' : 'Added';
      fill(null);
      await onSaved(`${verb} ${saved.name}.`);
    } catch (ex) {
      error.textContent = `Not saved: ${ex.message}`;
    } finally {
      save.disabled = false;
    }
  });

  return { form, fill, focus: () => name.focus() };
}

/** The Schedules panel of the open workspace. */
function schedulesPanel() {
  const status = el('p', { class: 'hint', role: 'status', id: 'sched-status' });
  const error = el('p', { class: 'error', role: 'alert', id: 'sched-error' });
  const rows = el('tbody');
  const table = el('table', { class: 'data-table', id: 'sched-table', hidden: true },
    el('caption', { class: 'visually-hidden' }, 'Schedules: when each fires, the next run and the last fire'),
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col' }, 'Name'), el('th', { scope: 'col' }, 'When'),
      el('th', { scope: 'col' }, 'Next run'), el('th', { scope: 'col' }, 'Last fire'),
      el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Actions')))),
    rows);
  const empty = el('p', { class: 'hint', id: 'sched-empty', hidden: true }, 'No schedule yet: add one below.');
  const historyTitle = el('h4', { id: 'sched-history-title', class: 'panel-subtitle', tabindex: '-1' }, 'History');
  const historyRows = el('tbody');
  const history = el('section', { id: 'sched-history', 'aria-labelledby': 'sched-history-title', hidden: true },
    historyTitle,
    el('table', { class: 'data-table' },
      el('caption', { class: 'visually-hidden' }, 'Fires, newest first'),
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col' }, 'Due'), el('th', { scope: 'col' }, 'Status'),
        el('th', { scope: 'col' }, 'Why'), el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Ledger')))),
      historyRows));
  const editor = scheduleForm(async (said) => {
    status.textContent = said;
    await load();
  });
  const root = el('section', { class: 'panel schedules', id: 'schedules-panel', 'aria-labelledby': 'sched-title' },
    el('h3', { id: 'sched-title', class: 'panel-title' }, 'Schedules'),
    el('p', { class: 'hint' }, 'Prompts sent to this agent on a clock. A fire is queued durably even while the agent is '
      + 'offline or paused; fires missed beyond the catch-up window are recorded as missed, never silently dropped.'),
    status, error, table, empty, history, editor.form);

  let shownFor = null;

  async function load() {
    const ws = state.current;
    if (!ws) return;
    shownFor = ws.id;
    error.textContent = '';
    try {
      const list = await api(wsPath(ws.id, '/schedules'));
      if (shownFor !== ws.id) return;
      rows.replaceChildren(...list.map((s) => row(ws, s)));
      table.hidden = list.length === 0;
      empty.hidden = list.length !== 0;
    } catch (e) {
      if (shownFor === ws.id) error.textContent = `Could not list the schedules: ${e.message}`;
    }
  }

  function row(ws, s) {
    const last = s.last_status
      ? el('span', {}, fireChip(s.last_status), ' ', s.last_run_at ? ago(s.last_run_at, serverNow()) : '',
        s.last_error ? el('span', { class: 'hint' }, ` — ${s.last_error}`) : '')
      : el('span', { class: 'hint' }, 'never run');
    const act = (label, aria, fn, cls = 'ghost small') => el('button', { type: 'button', class: cls, 'aria-label': aria, onclick: fn }, label);
    return el('tr', { dataset: { sid: s.id } },
      el('td', {}, s.name, s.enabled ? '' : el('span', { class: 'hint' }, ' (paused)')),
      el('td', {}, el('code', {}, s.cron_expr), el('span', { class: 'hint' }, ` ${s.timezone}`)),
      el('td', {}, s.enabled ? el('time', { datetime: s.next_run_at }, localTime(s.next_run_at)) : '—'),
      el('td', {}, last),
      el('td', {},
        act('Run now', `Run now: ${s.name}`, () => runNow(ws, s)),
        act('History', `History of ${s.name}`, () => showHistory(ws, s)),
        act('Edit', `Edit ${s.name}`, () => { editor.fill(s); editor.focus(); }),
        act('Delete', `Delete ${s.name}`, () => remove(ws, s), 'danger small')));
  }

  async function runNow(ws, s) {
    status.textContent = '';
    error.textContent = '';
    try {
      const fire = await api(wsPath(ws.id, `/schedules/${s.id}/run`), { method: 'POST' });
      status.textContent = fire.status === 'skipped'
        ? `${s.name} was not fired: ${fire.detail || 'the previous fire still runs'}.`
        : `${s.name} fired: ${fire.status}.`;
      await load();
      if (!history.hidden) await showHistory(ws, s, false);
    } catch (e) {
      error.textContent = `Could not run ${s.name}: ${e.message}`;
    }
  }

  async function showHistory(ws, s, focus = true) {
    error.textContent = '';
    try {
      const fires = await api(wsPath(ws.id, `/schedules/${s.id}/history?limit=${HISTORY_LIMIT}`));
      historyTitle.textContent = `History of ${s.name}`;
      historyRows.replaceChildren(...(fires.length ? fires.map((f) => el('tr', { dataset: { fid: f.fire_id, status: f.status } },
        el('td', {}, el('time', { datetime: f.due_at }, localTime(f.due_at))),
        el('td', {}, fireChip(f.status)),
        el('td', {}, f.detail || ''),
        el('td', {}, f.delegation_id
          ? el('a', { href: `#/w/${ws.id}/delegations/${f.delegation_id}` }, 'ledger row')
          : ''))) : [el('tr', {}, el('td', { colspan: '4', class: 'hint' }, 'No fire yet.'))]));
      history.hidden = false;
      if (focus) historyTitle.focus();
    } catch (e) {
      error.textContent = `Could not read the history of ${s.name}: ${e.message}`;
    }
  }

  async function remove(ws, s) {
    status.textContent = '';
    error.textContent = '';
    if (!window.confirm(`Delete the schedule ${s.name}? It stops firing; its history goes with it.`)) return;
    try {
      await api(wsPath(ws.id, `/schedules/${s.id}`), { method: 'DELETE' });
      status.textContent = `Deleted ${s.name}.`;
      history.hidden = true;
      await load();
      editor.focus();
    } catch (e) {
      error.textContent = `Could not delete ${s.name}: ${e.message}`;
    }
  }

  return {
    root,
    show() {
      status.textContent = '';
      history.hidden = true;
      editor.fill(null);
      load();
    },
  };
}

/** Registers the Schedules tab; called once at start. */
export function initSchedules() {
  const panel = schedulesPanel();
  registerTab('schedules', 'Schedules', panel.root, { show: () => panel.show() });
}
