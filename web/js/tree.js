// The team tree of the workspace list: children drawn under their parent
// in nested lists, each team with a fold button whose state is the
// server's `collapsed` (PATCH /workspaces/:id), so a fold survives a
// reload and follows the operator to another browser.
//
// The markup is the disclosure pattern (a button with aria-expanded and
// aria-controls above a nested <ul>), not role="tree": the entries stay
// plain links that Tab and Enter reach, as in the flat list before.

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

/** How many workspaces sit below `id`, at any depth. */
function subtreeSize(kids, id, seen = new Set()) {
  let n = 0;
  for (const c of kids.get(id) || []) {
    if (seen.has(c.id)) continue;
    seen.add(c.id);
    n += 1 + subtreeSize(kids, c.id, seen);
  }
  return n;
}

/**
 * The list items of the whole tree: `entry(ws)` draws one workspace's
 * link; `order` sorts siblings. A folded team keeps its (empty, hidden)
 * group so that its button's aria-controls names an element.
 */
export function drawTree(workspaces, order, entry) {
  const kids = teams(workspaces);
  const drawn = new Set(); // a cycle (never sent by the server) cannot loop
  const branch = (ws) => {
    drawn.add(ws.id);
    const children = (kids.get(ws.id) || []).filter((c) => !drawn.has(c.id)).sort(order);
    const row = el('div', { class: 'tree-row' });
    const li = el('li', { class: 'tree-node', dataset: { node: ws.id } }, row);
    if (!children.length) {
      row.append(el('span', { class: 'fold-spacer', 'aria-hidden': 'true' }), entry(ws));
      return li;
    }
    const open = !ws.collapsed;
    const group = `team-${ws.id}`;
    row.append(
      el('button', {
        type: 'button',
        class: 'fold',
        'aria-expanded': String(open),
        'aria-controls': group,
        dataset: { fold: ws.id },
        title: open ? 'Fold this team' : 'Unfold this team',
      },
      el('span', { class: 'fold-icon', 'aria-hidden': 'true' }, open ? '▾' : '▸'),
      el('span', { class: 'visually-hidden' }, `Team of ${ws.name}: `),
      String(subtreeSize(kids, ws.id))),
      entry(ws),
    );
    li.append(el('ul', { id: group, class: 'team', hidden: !open, 'aria-label': `Team of ${ws.name}` },
      ...(open ? children.map(branch) : [])));
    return li;
  };
  return kids.get('').sort(order).map(branch);
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
