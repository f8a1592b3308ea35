// Search across workspaces: the box above the workspace list
// (`#global-search`, with its Search button) asks GET /search and lists the hits in a dialog,
// grouped by kind (messages, memories, delegations), newest first, with
// "Show more" while the server hands a cursor. A hit opens where its work
// goes on: a message its chat, filtered to the words searched; a memory
// its workspace's Memory tab; a delegation its row in the Delegations tab.

import { api } from './api.js';
import { $, ago, el } from './dom.js';
import { select } from './tabs.js';

const PAGE = 20;
const GROUPS = [
  { kind: 'message', title: 'Messages' },
  { kind: 'memory', title: 'Memories' },
  { kind: 'delegation', title: 'Delegations' },
];

let dialog = null;
let query = '';
let cursor = null;
let shown = [];
let opening = false; // the dialog closes to open a hit: focus goes there

/** Goes to `hash` (the route opens the workspace), then runs `then`. */
function goTo(hash, then) {
  opening = true;
  dialog.close();
  if (location.hash === hash) {
    then();
    return;
  }
  window.addEventListener('hashchange', () => then(), { once: true });
  location.hash = hash;
}

/** The element `selector` finds, once it is there (`null` after `ms`). */
async function present(selector, ms = 4000) {
  for (const end = Date.now() + ms; Date.now() < end;) {
    const found = document.querySelector(selector);
    if (found) return found;
    await new Promise((resolve) => { setTimeout(resolve, 50); });
  }
  return null;
}

/** Marks and focuses the element of the hit that was opened. */
function mark(item) {
  if (!item) return;
  for (const old of document.querySelectorAll('.search-target')) old.classList.remove('search-target');
  item.classList.add('search-target');
  item.tabIndex = -1;
  item.scrollIntoView({ block: 'nearest' });
  item.focus();
}

/** Opens a hit where its work goes on. */
function open(hit) {
  const ws = `#/w/${hit.workspace_id}`;
  const q = query;
  if (hit.kind === 'delegation') {
    goTo(`${ws}/delegations/${hit.id}`, () => {});
  } else if (hit.kind === 'memory') {
    goTo(ws, async () => {
      select('memory');
      const sel = `#mem-results [data-mid="${CSS.escape(hit.id)}"]`;
      let item = await present(sel, 3000);
      if (!item) {
        // Not among the newest: recall it by the words searched.
        $('mem-q').value = q;
        $('mem-q').form.requestSubmit();
        item = await present(sel);
      }
      mark(item);
    });
  } else {
    goTo(ws, async () => {
      // The conversation, filtered to the words searched (all of it is read).
      const box = $('chat-search');
      box.value = q;
      box.dispatchEvent(new Event('input'));
      mark(await present(`#messages [data-id="${CSS.escape(hit.id)}"]:not([hidden])`));
    });
  }
}

function label(hit) {
  if (hit.kind === 'message') {
    return { canvas_user: 'you', agent: 'the agent', peer_agent: 'a peer' }[hit.source] || '';
  }
  if (hit.kind === 'memory') return hit.scope || '';
  return hit.status || '';
}

function item(hit) {
  const name = hit.workspace_name || 'a removed workspace';
  return el('li', { class: 'search-hit', dataset: { kind: hit.kind, id: hit.id } },
    el('button', { type: 'button', class: 'search-open', onclick: () => open(hit) },
      el('span', { class: 'search-where' }, name),
      el('span', { class: 'search-snippet' }, hit.snippet)),
    el('span', { class: 'hint' }, [label(hit), ago(hit.created_at)].filter(Boolean).join(' · ')));
}

/** Draws every hit shown so far, grouped by kind. */
function render() {
  const body = $('search-results');
  body.replaceChildren();
  for (const g of GROUPS) {
    const hits = shown.filter((h) => h.kind === g.kind);
    if (!hits.length) continue;
    const id = `search-group-${g.kind}`;
    body.append(el('section', { class: 'search-group', 'aria-labelledby': id },
      el('h3', { id }, `${g.title} (${hits.length})`),
      el('ul', { class: 'search-list' }, ...hits.map(item))));
  }
  $('search-more').hidden = !cursor;
  $('search-status').textContent = shown.length
    ? `${shown.length} result${shown.length === 1 ? '' : 's'}${cursor ? ', more to show' : ''} for “${query}”`
    : `Nothing matches “${query}”.`;
}

/** Asks for the next page (`more`) or the first one. */
async function load(more) {
  const params = new URLSearchParams({ q: query, limit: String(PAGE) });
  if (more && cursor) params.set('cursor', cursor);
  $('search-error').textContent = '';
  try {
    const page = await api(`/search?${params}`);
    if (!more) shown = [];
    shown = shown.concat(page.results);
    cursor = page.next_cursor;
    render();
  } catch (e) {
    $('search-error').textContent = e.message;
    $('search-status').textContent = '';
  }
}

async function submit(e) {
  e.preventDefault();
  const box = $('global-search');
  const q = box.value.trim();
  if (!q) {
    box.focus();
    return;
  }
  query = q;
  cursor = null;
  shown = [];
  $('search-heading').textContent = `Search: ${q}`;
  $('search-results').replaceChildren();
  $('search-status').textContent = 'Searching…';
  if (!dialog.open) dialog.showModal();
  await load(false);
  $('search-heading').focus();
}

/** Wires the search form of the workspace list; the dialog goes into `main`. */
export function initSearch() {
  dialog = el('dialog', { id: 'search-dialog', class: 'panel-dialog', 'aria-labelledby': 'search-heading' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'search-heading', tabindex: '-1' }, 'Search'),
      el('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Close')),
    el('p', { id: 'search-status', class: 'hint', role: 'status' }),
    el('p', { id: 'search-error', class: 'error', role: 'alert' }),
    el('div', { id: 'search-results' }),
    el('button', { type: 'button', id: 'search-more', hidden: true, onclick: () => load(true) }, 'Show more'));
  // Closed without opening a hit: back to the box.
  dialog.addEventListener('close', () => {
    if (!opening) $('global-search').focus();
    opening = false;
  });
  document.querySelector('main').append(dialog);
  $('global-search-form').addEventListener('submit', submit);
}
