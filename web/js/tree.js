// The team tree of the workspace list: children drawn under their parent
// in nested lists, each team with a fold button whose state is the
// server's `collapsed` (PATCH /workspaces/:id), so a fold survives a
// reload and follows the operator to another browser.
//
// The markup is the disclosure pattern (a button with aria-expanded and
// aria-controls above a nested <ul>), not role="tree": the entries stay
// plain links that Tab and Enter reach, as in the flat list before.
//
// A fleet may hold thousands of workspaces, so the tree is first laid out
// as rows (`layOut`: one pass, no DOM), and only a window of them is
// drawn (`drawWindow`): the rows in view and a margin, still nested under
// their teams (the teams of the window's first row are drawn around it
// without their own rows).

import { api, wsPath } from './api.js';
import { el } from './dom.js';
import { state } from './state.js';

/**
 * Children of each workspace, and the roots under ''. A workspace whose
 * parent is not in the list (removed, or not visible) is drawn as a root
 * rather than lost.
 */
function teams(workspaces) {
  const listed = new Set(workspaces.map((w) => w.id));
  const kids = new Map([['', []]]);
  for (const w of workspaces) {
    const p = w.parent_id && listed.has(w.parent_id) ? w.parent_id : '';
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(w);
  }
  return kids;
}

/** How many workspaces sit below each team, at any depth (one pass). */
function teamSizes(kids) {
  const sizes = new Map();
  const seen = new Set(); // a cycle (never sent by the server) cannot loop
  const size = (id) => {
    if (sizes.has(id)) return sizes.get(id);
    let n = 0;
    for (const c of kids.get(id) || []) {
      if (seen.has(c.id)) continue;
      seen.add(c.id);
      n += 1 + size(c.id);
    }
    sizes.set(id, n);
    return n;
  };
  for (const root of kids.get('')) {
    seen.add(root.id);
    size(root.id);
  }
  return sizes;
}

/**
 * The rows of the whole tree, in the order drawn: `{ws, depth, team, open,
 * up}` where `team` is how many sit below it (0 for a leaf), `open` whether
 * its team is unfolded, and `up` its parent's row index (-1 for a root).
 * Siblings come in the order of `workspaces` (sorted once by the caller),
 * or sorted by `order` when given; a folded team's members are not rows.
 */
export function layOut(workspaces, order = null) {
  const kids = teams(workspaces);
  const sizes = teamSizes(kids);
  const drawn = new Set();
  const rows = [];
  const walk = (ws, depth, up) => {
    drawn.add(ws.id);
    const children = (kids.get(ws.id) || []).filter((c) => !drawn.has(c.id));
    const open = !ws.collapsed;
    const at = rows.length;
    rows.push({ ws, depth, team: children.length ? sizes.get(ws.id) || children.length : 0, open, up });
    if (!children.length || !open) return;
    for (const c of order ? children.sort(order) : children) walk(c, depth + 1, at);
  };
  const roots = kids.get('');
  for (const root of order ? roots.sort(order) : roots) walk(root, 0, -1);
  return rows;
}

/** The fold button of a team's row. */
function foldButton(ws, team, open) {
  return el('button', {
    type: 'button',
    class: 'fold',
    'aria-expanded': String(open),
    'aria-controls': `team-${ws.id}`,
    dataset: { fold: ws.id },
    title: open ? 'Fold this team' : 'Unfold this team',
  },
  el('span', { class: 'fold-icon', 'aria-hidden': 'true' }, open ? '▾' : '▸'),
  el('span', { class: 'visually-hidden' }, `Team of ${ws.name}: `),
  String(team));
}

/** A team's group: the nested list its members are drawn in. */
const group = (ws, open) => el('ul', { id: `team-${ws.id}`, class: 'team', hidden: !open, 'aria-label': `Team of ${ws.name}` });

/**
 * The list items of rows `from` to `to` (exclusive) of `rows` (from
 * layOut), nested as the tree is: `entry(ws)` draws one workspace's link.
 * The teams the first row sits in are drawn around it as items without a
 * row of their own, so that every member is in its team's group. A
 * folded team keeps its (empty, hidden) group so that its button's
 * aria-controls names an element.
 */
export function drawWindow(rows, from, to, entry) {
  const top = [];
  const stack = []; // open groups: {depth, ul}
  const put = (depth, li) => {
    while (stack.length && stack[stack.length - 1].depth >= depth) stack.pop();
    if (stack.length) stack[stack.length - 1].ul.append(li);
    else top.push(li);
  };
  const chain = [];
  for (let a = rows[from]?.up ?? -1; a >= 0; a = rows[a].up) chain.unshift(rows[a]);
  for (const r of chain) {
    const ul = group(r.ws, true);
    put(r.depth, el('li', { class: 'tree-node tree-above', dataset: { node: r.ws.id } }, ul));
    stack.push({ depth: r.depth, ul });
  }
  for (let i = from; i < to; i += 1) {
    const r = rows[i];
    const row = el('div', { class: 'tree-row' });
    const li = el('li', { class: 'tree-node', dataset: { node: r.ws.id, row: i } }, row);
    put(r.depth, li);
    if (!r.team) {
      row.append(el('span', { class: 'fold-spacer', 'aria-hidden': 'true' }), entry(r.ws, r));
      continue;
    }
    row.append(foldButton(r.ws, r.team, r.open), entry(r.ws, r));
    const ul = group(r.ws, r.open);
    li.append(ul);
    if (r.open) stack.push({ depth: r.depth, ul });
  }
  return top;
}

/**
 * Folds or unfolds `ws`'s team: at once on the page, then on the server;
 * put back (and the error thrown) when the server refuses.
 */
export async function setFold(ws, collapsed) {
  const before = ws.collapsed;
  ws.collapsed = collapsed;
  try {
    const saved = await api(wsPath(ws.id), { method: 'PATCH', body: { collapsed } });
    const i = state.workspaces.findIndex((w) => w.id === ws.id);
    if (i >= 0) state.workspaces[i] = saved;
  } catch (e) {
    ws.collapsed = before;
    throw e;
  }
}
