// Usage: the Usage tab of a workspace. What it (or, for a workspace with
// workspaces under it, its whole team: `scope=subtree`) spent today and
// this month — tokens in and out, calls, cost — a bar chart of the cost of
// the last 30 days and one of this month by model, and its monthly budget
// as a bar: limit, spent and remaining, with the 80 % warning and the
// spent (402) state worded, not only coloured. An operator sets or lifts
// the ceiling here (PATCH /workspaces/:id/budget); a viewer's page shows it
// read-only (the form is not offered; the server would refuse it anyway).
//
// The charts are SVG drawn here with presentation attributes (the page's
// CSP allows no inline style) and each has the same figures as a table.

import { api, wsPath } from './api.js';
import { el, lazyFormat } from './dom.js';
import { serverNow, state } from './state.js';
import { registerTab } from './tabs.js';

const DAYS = 30;
const SVG = 'http://www.w3.org/2000/svg';
const WARN_PERCENT = 80;

const USD = lazyFormat(() => new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 4 }));
const COUNT = lazyFormat(() => new Intl.NumberFormat('en-US'));
/** "$0.5125": a cost in dollars (the API's float). */
export const dollars = (usd) => USD.format(usd || 0);
/** "$1.00": cents (the budget's unit) in dollars. */
const cents = (c) => USD.format((c || 0) / 100);

/** `YYYY-MM-DD` of a time, in UTC (the server's days). */
const dayOf = (ms) => new Date(ms).toISOString().slice(0, 10);

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** The sums of rows (`{input_tokens, output_tokens, calls, cost_usd}`). */
function sum(rows) {
  const t = { input_tokens: 0, output_tokens: 0, calls: 0, cost_usd: 0 };
  for (const r of rows) for (const k of Object.keys(t)) t[k] += r[k] || 0;
  return t;
}

function figureRow(label, t) {
  return el('tr', {},
    el('th', { scope: 'row' }, label),
    el('td', {}, COUNT.format(t.input_tokens)),
    el('td', {}, COUNT.format(t.output_tokens)),
    el('td', {}, COUNT.format(t.calls)),
    el('td', {}, dollars(t.cost_usd)));
}

/** Cost by day: one bar per day of `days` (oldest first), scaled to the largest. */
function dayChart(days, byDay) {
  const max = Math.max(0, ...days.map((d) => byDay.get(d)?.cost_usd || 0));
  const chart = svg('svg', { viewBox: `0 0 ${days.length * 10} 100`, preserveAspectRatio: 'none', class: 'usage-days', 'aria-hidden': 'true', focusable: 'false' });
  days.forEach((d, i) => {
    const cost = byDay.get(d)?.cost_usd || 0;
    const h = max > 0 ? Math.max(cost > 0 ? 2 : 0, (cost / max) * 100) : 0;
    chart.append(svg('rect', { x: i * 10 + 1, y: 100 - h, width: 8, height: h, class: 'usage-bar', 'data-day': d }));
  });
  return chart;
}

/** A horizontal bar of `part` of `whole`, as a small SVG. */
function hbar(part, whole, cls = 'usage-bar') {
  const pct = whole > 0 ? Math.min(100, (part / whole) * 100) : 0;
  const bar = svg('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none', class: 'usage-hbar', 'aria-hidden': 'true', focusable: 'false' });
  bar.append(svg('rect', { x: 0, y: 0, width: 100, height: 10, class: 'usage-track' }),
    svg('rect', { x: 0, y: 0, width: pct, height: 10, class: cls }));
  return bar;
}

/** The figures table of a chart, so that the bars are also read as numbers. */
function rowsTable(caption, keyLabel, rows, withBar) {
  const max = Math.max(0, ...rows.map((r) => r.cost_usd));
  return el('table', { class: 'data-table usage-table' },
    el('caption', {}, caption),
    el('thead', {}, el('tr', {},
      el('th', { scope: 'col' }, keyLabel), el('th', { scope: 'col' }, 'Tokens in'), el('th', { scope: 'col' }, 'Tokens out'),
      el('th', { scope: 'col' }, 'Calls'), el('th', { scope: 'col' }, 'Cost'))),
    el('tbody', {}, ...(rows.length ? rows.map((r) => el('tr', { dataset: { key: r.key } },
      el('th', { scope: 'row' }, r.key, withBar ? hbar(r.cost_usd, max) : null),
      el('td', {}, COUNT.format(r.input_tokens)), el('td', {}, COUNT.format(r.output_tokens)),
      el('td', {}, COUNT.format(r.calls)), el('td', {}, dollars(r.cost_usd))))
      : [el('tr', {}, el('td', { colspan: '5', class: 'hint' }, 'No usage recorded.'))])));
}

/**
 * The budget's state: `none` (no ceiling of its own), `ok`, `warning`
 * (80 % or more of its ceiling spent) or `exceeded` (its own or an
 * ancestor's ceiling is spent: new work answers 402).
 */
export function budgetState(b) {
  if (b.budget_exceeded) return 'exceeded';
  if (b.budget_limit === null) return 'none';
  if (b.monthly_spend * 100 >= b.budget_limit * WARN_PERCENT) return 'warning';
  return 'ok';
}

function budgetSentence(b, st, scopeName) {
  const pct = b.budget_limit ? Math.floor((b.monthly_spend * 100) / b.budget_limit) : null;
  switch (st) {
    case 'exceeded':
      return b.budget_limit !== null && b.monthly_spend >= b.budget_limit
        ? `Budget spent: ${cents(b.monthly_spend)} of ${cents(b.budget_limit)}. New messages, delegations and schedule fires for ${scopeName} are refused (402) until the limit is raised or the month ends.`
        : `A team budget over ${scopeName} is spent: new messages, delegations and schedule fires for it are refused (402) until that limit is raised or the month ends.`;
    case 'warning':
      return `Warning: ${pct} % of the monthly budget is spent (${cents(b.monthly_spend)} of ${cents(b.budget_limit)}); at 100 % new work is refused.`;
    case 'ok':
      return `${pct} % of the monthly budget is spent.`;
    default:
      return `No monthly budget is set on ${scopeName}.`;
  }
}

/** The Usage panel of the open workspace. */
function usagePanel() {
  const ids = (n) => `usage-${n}`;
  const title = el('h3', { id: ids('title'), class: 'panel-title' }, 'Usage');
  const scope = el('select', { id: ids('scope') },
    el('option', { value: 'workspace' }, 'This workspace'),
    el('option', { value: 'subtree' }, 'This workspace and its team'));
  const scopeField = el('span', { class: 'usage-scope' }, el('label', { for: ids('scope') }, 'Whose usage'), scope);
  const refresh = el('button', { type: 'button', class: 'ghost', id: ids('refresh') }, 'Refresh');
  const error = el('p', { class: 'error', role: 'alert', id: ids('error') });
  const status = el('p', { class: 'hint', role: 'status', id: ids('status') });
  const totals = el('tbody');
  const totalsTable = el('table', { class: 'data-table usage-totals', id: ids('totals') },
    el('caption', { class: 'visually-hidden' }, 'Today and this month (UTC)'),
    el('thead', {}, el('tr', {},
      el('td', {}), el('th', { scope: 'col' }, 'Tokens in'), el('th', { scope: 'col' }, 'Tokens out'),
      el('th', { scope: 'col' }, 'Calls'), el('th', { scope: 'col' }, 'Cost'))),
    totals);
  const daysBox = el('div', { id: ids('days') });
  const modelsBox = el('div', { id: ids('models') });

  // The budget.
  const budgetText = el('p', { id: ids('budget-text'), class: 'usage-budget-text' });
  const budgetFigures = el('p', { id: ids('budget-figures'), class: 'hint' });
  const budgetBar = el('div', { class: 'usage-budget-bar' });
  const limit = el('input', { id: ids('limit'), name: 'budget_limit', type: 'number', min: '0', step: '0.01', inputmode: 'decimal', autocomplete: 'off' });
  const formError = el('p', { class: 'error', role: 'alert', id: ids('budget-error') });
  const save = el('button', { type: 'submit', class: 'primary', id: ids('budget-save') }, 'Set the budget');
  const lift = el('button', { type: 'button', class: 'ghost', id: ids('budget-lift') }, 'Remove the limit');
  const form = el('form', { class: 'budget-form', novalidate: true, 'aria-labelledby': ids('budget-form-title') },
    el('h5', { id: ids('budget-form-title'), class: 'visually-hidden' }, 'Set the monthly budget'),
    el('div', { class: 'field' }, el('label', { for: ids('limit') }, 'Monthly limit (USD)'), limit,
      el('p', { class: 'hint' }, 'Covers this workspace and every workspace under it; agents cannot change it.')),
    formError,
    el('div', { class: 'panel-tools' }, save, lift));
  const budget = el('section', { class: 'usage-budget', id: ids('budget'), 'aria-labelledby': ids('budget-title') },
    el('h4', { id: ids('budget-title'), class: 'panel-subtitle' }, 'Monthly budget'),
    budgetText, budgetBar, budgetFigures, form);

  const root = el('section', { class: 'panel usage', id: 'usage-panel', 'aria-labelledby': ids('title') },
    title,
    el('p', { class: 'hint' }, 'Tokens, calls and cost the agents reported, per UTC day; a cost the agent did not give is priced by the server\'s price table.'),
    el('div', { class: 'panel-tools' }, scopeField, refresh),
    error, status,
    el('h4', { class: 'panel-subtitle' }, 'Today and this month'), totalsTable,
    budget,
    el('section', { 'aria-labelledby': ids('days-title') },
      el('h4', { id: ids('days-title'), class: 'panel-subtitle' }, `Cost by day, last ${DAYS} days`), daysBox),
    el('section', { 'aria-labelledby': ids('models-title') },
      el('h4', { id: ids('models-title'), class: 'panel-subtitle' }, 'This month by model'), modelsBox));

  let shownFor = null;
  let asked = 0;

  const hasTeam = (ws) => state.workspaces.some((w) => w.parent_id === ws.id);

  async function load() {
    const ws = state.current;
    if (!ws) return;
    const mine = ++asked;
    shownFor = ws.id;
    const now = serverNow();
    const today = dayOf(now);
    const monthStart = `${today.slice(0, 7)}-01`;
    const chartFrom = dayOf(now - (DAYS - 1) * 86_400_000);
    const from = chartFrom < monthStart ? chartFrom : monthStart;
    const sc = scope.value;
    const q = (group, f) => `/usage?group_by=${group}&from=${f}&to=${today}${sc === 'subtree' ? '&scope=subtree' : ''}`;
    try {
      const [byDay, byModel, b] = await Promise.all([
        api(wsPath(ws.id, q('day', from))),
        api(wsPath(ws.id, q('model', monthStart))),
        api(wsPath(ws.id, '/budget')),
      ]);
      if (mine !== asked || shownFor !== ws.id) return;
      error.textContent = '';
      const whose = sc === 'subtree' ? `${ws.name} and its team` : ws.name;
      title.textContent = `Usage of ${whose}`;
      totals.replaceChildren(
        figureRow('Today', sum(byDay.rows.filter((r) => r.key === today))),
        figureRow('This month', sum(byDay.rows.filter((r) => r.key >= monthStart))));
      const days = [];
      for (let i = DAYS - 1; i >= 0; i -= 1) days.push(dayOf(now - i * 86_400_000));
      const map = new Map(byDay.rows.map((r) => [r.key, r]));
      const shown = byDay.rows.filter((r) => r.key >= chartFrom);
      daysBox.replaceChildren(
        el('figure', { class: 'usage-chart' },
          dayChart(days, map),
          el('figcaption', { class: 'usage-axis hint' }, el('span', {}, days[0]), el('span', {}, days[days.length - 1]))),
        rowsTable('Days with usage', 'Day', shown.slice().reverse(), false));
      modelsBox.replaceChildren(rowsTable('Models this month, with each one\'s share of the cost', 'Model',
        byModel.rows.slice().sort((x, y) => y.cost_usd - x.cost_usd), true));
      showBudget(b, ws);
    } catch (e) {
      if (mine === asked) error.textContent = `Could not read the usage: ${e.message}`;
    }
  }

  function showBudget(b, ws) {
    const st = budgetState(b);
    budget.dataset.state = st;
    budgetText.textContent = budgetSentence(b, st, ws.name);
    budgetText.setAttribute('role', st === 'warning' || st === 'exceeded' ? 'alert' : 'status');
    if (b.budget_limit === null) {
      budgetBar.replaceChildren();
      budgetFigures.textContent = `Spent this month (with its team): ${cents(b.monthly_spend)}.`;
    } else {
      budgetBar.replaceChildren(hbar(b.monthly_spend, b.budget_limit, `usage-bar budget-${st}`));
      budgetFigures.textContent = `Limit ${cents(b.budget_limit)} · spent ${cents(b.monthly_spend)} · remaining ${cents(b.budget_remaining)}`;
    }
    if (document.activeElement !== limit) limit.value = b.budget_limit === null ? '' : (b.budget_limit / 100).toFixed(2);
    lift.hidden = b.budget_limit === null;
  }

  async function setLimit(value, said) {
    const ws = state.current;
    formError.textContent = '';
    status.textContent = '';
    save.disabled = true;
    lift.disabled = true;
    try {
      const b = await api(wsPath(ws.id, '/budget'), { method: 'PATCH', body: { budget_limit: value } });
      if (shownFor === ws.id) showBudget(b, ws);
      status.textContent = said;
    } catch (e) {
      formError.textContent = `Not saved: ${e.message}`;
    } finally {
      save.disabled = false;
      lift.disabled = false;
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const raw = limit.value.trim();
    const usd = Number(raw);
    if (!raw || !Number.isFinite(usd) || usd < 0) {
      formError.textContent = 'Enter the monthly limit in dollars (0 or more), or remove the limit.';
      limit.focus();
      return;
    }
    const c = Math.round(usd * 100);
    setLimit(c, `The monthly budget is now ${cents(c)}.`);
  });
  lift.addEventListener('click', () => setLimit(null, 'The monthly budget was removed.'));
  scope.addEventListener('change', load);
  refresh.addEventListener('click', load);

  return {
    root,
    show(ws) {
      status.textContent = '';
      formError.textContent = '';
      const team = hasTeam(ws);
      scopeField.hidden = !team;
      scope.value = team ? 'subtree' : 'workspace';
      limit.value = '';
      load();
    },
    hide() {
      shownFor = null;
    },
  };
}

/** Registers the Usage tab; called once at start. */
export function initUsage() {
  const panel = usagePanel();
  registerTab('usage', 'Usage', panel.root, { show: (ws) => panel.show(ws), hide: () => panel.hide() });
}
