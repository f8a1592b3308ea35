// The trace view: one trace (GET /traces/:trace_id) as a waterfall across
// workspaces, in a dialog. One row per span, nested under its parent
// (indented, in tree order), with a bar offset and sized by its time in the
// trace, and its workspace, name, duration, tokens and cost; each row's
// button unfolds its moments, model and attributes. Opened from a
// Delegations row (the ledger row's `trace_id`) and from a chat message
// that carries a `traceparent`: those modules say `show-trace` on the bus
// with the trace id, so none imports this one.
//
// Bars are SVG with presentation attributes (no inline style under the
// page's CSP); on a phone the row's text sits above its bar.

import { api } from './api.js';
import { el } from './dom.js';
import { bus, state } from './state.js';
import { dollars } from './usage.js';

const SVG = 'http://www.w3.org/2000/svg';
const MAX_INDENT = 8;
const TRACE_ID = /^[0-9a-f]{32}$/;

/** The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`), or null. */
export function traceIdOf(traceparent) {
  const id = typeof traceparent === 'string' ? traceparent.split('-')[1] : null;
  return id && TRACE_ID.test(id) && !/^0+$/.test(id) ? id : null;
}

/** A button that opens trace `traceId`; `label` names what it traces. */
export function traceButton(traceId, label) {
  return el('button', {
    type: 'button', class: 'ghost small trace-open', dataset: { trace: traceId }, 'aria-label': `Trace of ${label}`,
    onclick: () => bus.dispatchEvent(new CustomEvent('show-trace', { detail: traceId })),
  }, 'Trace');
}

function nameOf(id) {
  if (!id) return 'unknown';
  if (id === 'operator') return 'operator';
  if (id.startsWith('schedule:')) return 'a schedule';
  return state.workspaces.find((w) => w.id === id)?.name || id.slice(0, 8);
}

/** "850 ms", "4.2 s", "3.1 min": a duration, briefly. */
function duration(ms) {
  if (ms === null || ms === undefined) return 'in flight';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))} s`;
  return `${Number((ms / 60_000).toFixed(1))} min`;
}

function tokens(t) {
  return `${t.input_tokens.toLocaleString('en-US')} in / ${t.output_tokens.toLocaleString('en-US')} out`;
}

/** Every span of the tree in display order, with its depth. */
function flatten(roots) {
  const out = [];
  const walk = (node, depth) => {
    out.push({ node, depth });
    for (const c of node.children || []) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  return out;
}

function bar(node, t0, span, now) {
  const start = Date.parse(node.start);
  const end = node.end ? Date.parse(node.end) : now;
  const x = span > 0 ? ((start - t0) / span) * 1000 : 0;
  const w = span > 0 ? Math.max(4, ((end - start) / span) * 1000) : 1000;
  const box = document.createElementNS(SVG, 'svg');
  for (const [k, v] of Object.entries({ viewBox: '0 0 1000 10', preserveAspectRatio: 'none', class: 'trace-bar', 'aria-hidden': 'true', focusable: 'false' })) {
    box.setAttribute(k, v);
  }
  const rect = document.createElementNS(SVG, 'rect');
  for (const [k, v] of Object.entries({ x: Math.min(x, 996), y: 0, width: Math.min(w, 1000 - Math.min(x, 996)), height: 10, class: `trace-span trace-${node.kind}` })) {
    rect.setAttribute(k, String(v));
  }
  box.append(rect);
  return box;
}

function details(node, id) {
  const parts = [];
  const facts = [];
  if (node.caller_id) facts.push(`asked by ${nameOf(node.caller_id)}`);
  if (node.status) facts.push(`status ${node.status}`);
  if (node.model) facts.push(`model ${node.model}`);
  facts.push(`own ${tokens(node.own)}, ${dollars(node.own.cost_usd)}`);
  parts.push(el('p', {}, facts.join(' · ')));
  const events = Array.isArray(node.events) ? node.events : [];
  if (events.length) {
    parts.push(el('ol', { class: 'trace-events' }, ...events.map((e) => el('li', {},
      `${e.name} `, el('time', { datetime: e.at }, new Date(e.at).toLocaleTimeString())))));
  }
  const attrs = node.attributes && typeof node.attributes === 'object' ? Object.entries(node.attributes) : [];
  if (attrs.length) {
    parts.push(el('dl', { class: 'trace-attrs' }, ...attrs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))])));
  }
  return el('div', { class: 'trace-details', id, hidden: true }, ...parts);
}

function spanRow({ node, depth }, t0, span, now) {
  const did = `trace-d-${node.span_id}`;
  const ws = nameOf(node.workspace_id);
  const toggle = el('button', { type: 'button', class: 'ghost trace-toggle', 'aria-expanded': 'false', 'aria-controls': did },
    el('span', { class: 'trace-name' }, node.name),
    el('span', { class: 'trace-ws' }, ` · ${ws}`));
  const more = details(node, did);
  toggle.addEventListener('click', () => {
    const open = toggle.getAttribute('aria-expanded') !== 'true';
    toggle.setAttribute('aria-expanded', String(open));
    more.hidden = !open;
  });
  return el('li', { class: `trace-row depth-${Math.min(depth, MAX_INDENT)}`, dataset: { span: node.span_id, depth: String(depth), workspace: node.workspace_id } },
    el('div', { class: 'trace-label' }, toggle,
      el('span', { class: 'trace-figures' },
        el('span', { class: 'trace-duration' }, duration(node.duration_ms)), ' · ',
        el('span', { class: 'trace-tokens' }, tokens(node.total)), ' · ',
        el('span', { class: 'trace-cost' }, dollars(node.total.cost_usd)))),
    bar(node, t0, span, now),
    more);
}

/** The trace dialog, made once; `open(traceId)` reads and draws one trace. */
function traceDialog() {
  const heading = el('h2', { id: 'trace-heading' }, 'Trace');
  const summary = el('p', { class: 'hint', id: 'trace-summary' });
  const error = el('p', { class: 'error', role: 'alert', id: 'trace-error' });
  const list = el('ol', { class: 'trace-list', id: 'trace-list', 'aria-labelledby': 'trace-heading' });
  const close = el('button', { type: 'button', class: 'ghost' }, 'Close');
  const dialog = el('dialog', { id: 'trace-dialog', class: 'panel-dialog trace-dialog', 'aria-labelledby': 'trace-heading' },
    el('div', { class: 'dialog-head' }, heading, close),
    el('p', { class: 'hint' }, 'One row per step, nested under the step that started it; each bar shows when the step ran within the whole trace. Tokens and cost include the steps under it.'),
    summary, error, list);
  close.addEventListener('click', () => dialog.close());
  document.querySelector('main').append(dialog);

  let asked = 0;
  async function open(traceId) {
    const mine = ++asked;
    heading.textContent = `Trace ${traceId.slice(0, 8)}…`;
    summary.textContent = 'Reading the trace…';
    error.textContent = '';
    list.replaceChildren();
    if (!dialog.open) dialog.showModal();
    close.focus();
    try {
      const t = await api(`/traces/${encodeURIComponent(traceId)}`);
      if (mine !== asked) return;
      const now = Date.now();
      const t0 = Date.parse(t.started_at);
      const rows = flatten(t.roots);
      const last = Math.max(t.ended_at ? Date.parse(t.ended_at) : t0, ...rows.map(({ node }) => (node.end ? Date.parse(node.end) : now)));
      const span = Math.max(1, last - t0);
      dialog.dataset.trace = t.trace_id;
      // `workspaces` names callers too (the operator, a schedule): count the workspaces.
      const wss = t.workspaces.filter((w) => w !== 'operator' && !w.startsWith('schedule:'));
      summary.textContent = `${t.span_count} spans across ${wss.length} workspace${wss.length === 1 ? '' : 's'} (${wss.map(nameOf).join(', ')}) · `
        + `${duration(last - t0)} · ${tokens(t.total)} · ${dollars(t.total.cost_usd)}`
        + (t.truncated ? ` · ${t.truncated} spans not shown (too deep or too many)` : '');
      list.replaceChildren(...rows.map((r) => spanRow(r, t0, span, now)));
    } catch (e) {
      if (mine !== asked) return;
      summary.textContent = '';
      error.textContent = e.status === 404 ? 'That trace is not known (or has been pruned).' : `Could not read the trace: ${e.message}`;
    }
  }
  return open;
}

/** Makes the trace dialog and opens it on every `show-trace`; called once at start. */
export function initTrace() {
  const open = traceDialog();
  bus.addEventListener('show-trace', (e) => open(e.detail));
}
