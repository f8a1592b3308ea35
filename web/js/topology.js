// The topology view (issue 30, missing 4): the team tree with the ledger's
// delegation edges — who asks whom, how often, how many fail — from GET
// /admin/delegations/edges. A dialog of the top bar: the tree as nested
// lists (each workspace a button that opens its chat), under each
// workspace the edges it starts, and a table of every edge, the busiest
// first. Plain DOM rather than a drawing, so that Tab reaches every node,
// a screen reader reads every edge, and a phone shows it at 390 px.

import { api } from './api.js';
import { el } from './dom.js';
import { state } from './state.js';

function nameOf(id) {
  if (id === 'operator') return 'operator';
  if (id.startsWith('schedule:')) return 'a schedule';
  return state.workspaces.find((w) => w.id === id)?.name || id.slice(0, 8);
}

/** "12 asked · 2 failed · 1 in flight". */
function counts(e) {
  const parts = [`${e.total} asked`];
  if (e.failed) parts.push(`${e.failed} failed`);
  if (e.in_flight) parts.push(`${e.in_flight} in flight`);
  return parts.join(' · ');
}

/** One edge as a line under its caller. */
const edgeItem = (e) => el('li', {
  class: `topo-edge${e.failed ? ' topo-failing' : ''}`, dataset: { caller: e.caller_id, callee: e.callee_id },
}, el('span', { 'aria-hidden': 'true' }, '→ '), el('span', { class: 'visually-hidden' }, 'asks '),
el('strong', {}, nameOf(e.callee_id)), `: ${counts(e)}`);

/** Builds the dialog once; answers the function that opens it. */
export function initTopology() {
  const tree = el('ul', { class: 'topo-tree', id: 'topo-tree', 'aria-labelledby': 'topo-tree-title' });
  const rows = el('tbody');
  const summary = el('p', { class: 'hint', role: 'status', id: 'topo-summary' });
  const error = el('p', { class: 'error', role: 'alert' });
  const close = el('button', { type: 'button', class: 'ghost' }, 'Close');
  const dialog = el('dialog', { id: 'topology-dialog', class: 'panel-dialog topology', 'aria-labelledby': 'topology-heading' },
    el('div', { class: 'dialog-head' }, el('h2', { id: 'topology-heading', tabindex: '-1' }, 'Topology'), close),
    summary, error,
    el('h3', { id: 'topo-tree-title', class: 'panel-subtitle' }, 'Teams and who they ask'),
    tree,
    el('h3', { id: 'topo-edges-title', class: 'panel-subtitle' }, 'Every edge, busiest first'),
    el('div', { class: 'topo-table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': 'topo-edges-title' }, el('table', { class: 'data-table topo-table', 'aria-labelledby': 'topo-edges-title' },
      el('thead', {}, el('tr', {}, ...['From', 'To', 'Asked', 'Failed', 'In flight'].map((h) => el('th', { scope: 'col' }, h)))),
      rows)));
  document.querySelector('main').append(dialog);
  close.addEventListener('click', () => dialog.close());

  function node(w, kids, from, seen) {
    seen.add(w.id);
    const children = (kids.get(w.id) || []).filter((c) => !seen.has(c.id));
    const out = from.get(w.id) || [];
    return el('li', { class: 'topo-node', dataset: { ws: w.id } },
      el('button', {
        type: 'button', class: 'linkish topo-name',
        onclick: () => {
          dialog.close();
          location.hash = `#/w/${w.id}`;
        },
      }, w.name),
      w.paused ? el('span', { class: 'hint' }, ' (paused)') : null,
      out.length ? el('ul', { class: 'topo-edges', 'aria-label': `${w.name} asks` }, ...out.map(edgeItem)) : null,
      children.length ? el('ul', { class: 'topo-tree' }, ...children.map((c) => node(c, kids, from, seen))) : null);
  }

  function draw(edges) {
    const listed = new Set(state.workspaces.map((w) => w.id));
    const kids = new Map([['', []]]);
    for (const w of state.workspaces) {
      const p = w.parent_id && listed.has(w.parent_id) ? w.parent_id : '';
      if (!kids.has(p)) kids.set(p, []);
      kids.get(p).push(w);
    }
    const from = new Map();
    for (const e of edges) {
      if (!from.has(e.caller_id)) from.set(e.caller_id, []);
      from.get(e.caller_id).push(e);
    }
    const seen = new Set();
    // Callers that are not workspaces (the operator, schedules) head the tree.
    const outside = [...from.keys()].filter((c) => !listed.has(c));
    tree.replaceChildren(
      ...outside.map((c) => el('li', { class: 'topo-node topo-outside', dataset: { ws: c } },
        el('span', { class: 'topo-name' }, nameOf(c)),
        el('ul', { class: 'topo-edges', 'aria-label': `${nameOf(c)} asks` }, ...from.get(c).map(edgeItem)))),
      ...kids.get('').map((w) => node(w, kids, from, seen)));
    rows.replaceChildren(...edges.map((e) => el('tr', { class: e.failed ? 'topo-failing' : '', dataset: { caller: e.caller_id, callee: e.callee_id } },
      el('td', {}, nameOf(e.caller_id)), el('td', {}, nameOf(e.callee_id)),
      el('td', {}, String(e.total)), el('td', {}, String(e.failed)), el('td', {}, String(e.in_flight)))));
    const failing = edges.filter((e) => e.failed).length;
    summary.textContent = `${state.workspaces.length} workspaces · ${edges.length} edge${edges.length === 1 ? '' : 's'}`
      + (failing ? ` · ${failing} with failures` : '');
  }

  return async () => {
    dialog.showModal();
    dialog.querySelector('#topology-heading').focus();
    error.textContent = '';
    try {
      draw(await api('/admin/delegations/edges'));
    } catch (e) {
      error.textContent = `Could not read the ledger's edges: ${e.message}`;
    }
  };
}
