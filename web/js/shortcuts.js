// Keyboard shortcuts: ⌘K / Ctrl+K opens a fuzzy workspace switcher,
// Alt+↓ / Alt+↑ move to the next / previous workspace of the list, `/`
// goes to search (the conversation's when a chat is open, else the list's
// filter), Esc goes back to the composer, and `?` lists them all in a
// help dialog. Single-key shortcuts never fire while typing in a field.
// Focus goes where the work continues: the composer after a switch, the
// control that opened a dialog after it closes.

import { $, el } from './dom.js';
import { state } from './state.js';
import { listedIds } from './workspaces.js';

const MAX_HITS = 50;

export const SHORTCUTS = [
  ['⌘K or Ctrl+K', 'Switch to a workspace by name'],
  ['Alt+↓ / Alt+↑', 'Next / previous workspace'],
  ['/', 'Search (this conversation, or the workspace list)'],
  ['Esc', 'Back to the message box'],
  ['?', 'This list'],
];

/**
 * How well `query` matches `name` as a subsequence (case-insensitive):
 * null when it does not; higher when the letters are together, at the
 * start of a word, and the name is short.
 */
export function fuzzyScore(query, name) {
  const q = query.toLowerCase();
  const n = name.toLowerCase();
  if (!q) return 0;
  let score = 0;
  let at = -1;
  for (const ch of q) {
    const next = n.indexOf(ch, at + 1);
    if (next < 0) return null;
    if (next === at + 1) score += 3; // together
    if (next === 0 || /[\s_\-./]/.test(n[next - 1])) score += 2; // a word's start
    at = next;
  }
  if (n.includes(q)) score += 10;
  return score - n.length / 100;
}

/** The workspaces in list order (as laid out, drawn or not), for next / previous. */
function listOrder() {
  const ids = listedIds();
  return ids.length ? ids : state.workspaces.map((w) => w.id);
}

/** Opens a workspace's chat and puts the cursor in its composer. */
function openWorkspace(id) {
  location.hash = `#/w/${id}`;
  // The chat shows synchronously on hashchange; then the composer.
  requestAnimationFrame(() => {
    const box = $('message');
    if (box && !box.closest('[hidden]')) box.focus();
  });
}

function step(delta) {
  const ids = listOrder();
  if (ids.length === 0) return;
  const at = ids.indexOf(state.current?.id);
  const to = at < 0 ? (delta > 0 ? 0 : ids.length - 1) : (at + delta + ids.length) % ids.length;
  openWorkspace(ids[to]);
}

/** Whether the key goes into a field (then single-key shortcuts stay out). */
function typing(target) {
  return target instanceof HTMLElement
    && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
}

// ------------------------------------------------------------ the switcher

let switcher = null;
let hits = [];
let active = 0;

function paintHits() {
  const input = $('switcher-input');
  const list = $('switcher-list');
  const q = input.value.trim();
  hits = state.workspaces
    .map((ws) => ({ ws, score: fuzzyScore(q, ws.name) }))
    .filter((h) => h.score !== null)
    .sort((a, b) => b.score - a.score || a.ws.name.localeCompare(b.ws.name))
    .slice(0, MAX_HITS);
  active = Math.min(active, Math.max(0, hits.length - 1));
  list.replaceChildren(...hits.map((h, i) => el('li', {
    id: `switcher-opt-${i}`,
    role: 'option',
    class: 'switcher-option',
    'aria-selected': String(i === active),
    dataset: { ws: h.ws.id },
    onclick: () => choose(i),
  }, h.ws.name)));
  input.setAttribute('aria-activedescendant', hits.length ? `switcher-opt-${active}` : '');
  if (!hits.length) input.removeAttribute('aria-activedescendant');
  $('switcher-empty').hidden = hits.length > 0;
  list.querySelector('[aria-selected="true"]')?.scrollIntoView({ block: 'nearest' });
}

function choose(i) {
  const hit = hits[i];
  if (!hit) return;
  switcher.dataset.chosen = '1';
  switcher.close();
  openWorkspace(hit.ws.id);
}

function openSwitcher() {
  if (switcher.open) return;
  switcher.dataset.chosen = '';
  switcher.opener = document.activeElement;
  $('switcher-input').value = '';
  active = 0;
  paintHits();
  switcher.showModal();
  $('switcher-input').focus();
}

function buildSwitcher() {
  const input = el('input', {
    id: 'switcher-input',
    type: 'text',
    role: 'combobox',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-expanded': 'true',
    'aria-controls': 'switcher-list',
    'aria-autocomplete': 'list',
    placeholder: 'Type a workspace name…',
  });
  input.addEventListener('input', () => { active = 0; paintHits(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      if (hits.length) active = (active + (e.key === 'ArrowDown' ? 1 : -1) + hits.length) % hits.length;
      paintHits();
    } else if (e.key === 'Enter') {
      e.preventDefault();
      choose(active);
    }
  });
  switcher = el('dialog', { id: 'switcher', class: 'panel-dialog switcher', 'aria-labelledby': 'switcher-title' },
    el('h2', { id: 'switcher-title', class: 'visually-hidden' }, 'Switch to a workspace'),
    el('label', { for: 'switcher-input', class: 'visually-hidden' }, 'Switch to a workspace'),
    input,
    el('ul', { id: 'switcher-list', role: 'listbox', class: 'switcher-list', 'aria-label': 'Matching workspaces' }),
    el('p', { id: 'switcher-empty', class: 'hint', hidden: true }, 'No workspace matches.'),
    el('p', { class: 'hint' }, '↑ ↓ to choose, Enter to open, Esc to close.'));
  switcher.addEventListener('close', () => {
    if (!switcher.dataset.chosen) switcher.opener?.focus?.();
  });
  document.querySelector('main').append(switcher);
}

// ------------------------------------------------------------ the help

let help = null;

function buildHelp() {
  help = el('dialog', { id: 'shortcuts-dialog', class: 'panel-dialog shortcuts', 'aria-labelledby': 'shortcuts-title' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'shortcuts-title' }, 'Keyboard shortcuts'),
      el('button', { type: 'button', id: 'shortcuts-close', class: 'ghost', onclick: () => help.close() }, 'Close')),
    el('dl', { class: 'shortcut-list' }, ...SHORTCUTS.flatMap(([keys, what]) => [
      el('dt', {}, el('kbd', {}, keys)), el('dd', {}, what)])));
  help.addEventListener('close', () => help.opener?.focus?.());
  document.querySelector('main').append(help);
}

function openHelp() {
  if (help.open) return;
  help.opener = document.activeElement;
  help.showModal();
  $('shortcuts-close').focus();
}

// ------------------------------------------------------------ the keys

function onKey(e) {
  if (document.body.dataset.view === 'signin' || e.defaultPrevented || e.isComposing) return;
  if ((e.metaKey || e.ctrlKey) && !e.altKey && !e.shiftKey && e.key.toLowerCase() === 'k') {
    e.preventDefault();
    openSwitcher();
    return;
  }
  // Inside another dialog, only the dialog's own keys.
  if (document.querySelector('dialog[open]')) return;
  if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
    e.preventDefault();
    step(e.key === 'ArrowDown' ? 1 : -1);
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === 'Escape' && state.current && e.target !== $('chat-search')) {
    const box = $('message');
    if (box && !box.closest('[hidden]') && document.activeElement !== box) {
      e.preventDefault();
      box.focus();
    }
    return;
  }
  if (typing(e.target)) return;
  if (e.key === '/') {
    e.preventDefault();
    const search = state.current && !$('chat-body').hidden ? $('chat-search') : $('ws-filter');
    search.focus();
    search.select();
  } else if (e.key === '?') {
    e.preventDefault();
    openHelp();
  }
}

/** Builds the switcher and the help, and listens for the keys; once at start. */
export function initShortcuts() {
  buildSwitcher();
  buildHelp();
  document.addEventListener('keydown', onKey);
}
