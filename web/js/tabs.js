// The tabs of the open workspace: its Chat (the conversation, owned by
// chat.js) and the panels other modules register here (Secrets,
// Delegations, …). A WAI-ARIA tab list: arrow keys move between tabs,
// only the selected one is in the tab order. The tabs follow the chat:
// chat.js says on the bus when a workspace opens (`chat-open`) and closes
// (`chat-close`); opening one always starts on its Chat tab.

import { $, el } from './dom.js';
import { bus, state } from './state.js';

const tabs = []; // { id, label, tab, panel, show(ws), hide() }
let list = null;

/** The tab list, made once, between the chat's header and its body. */
function tabList() {
  if (list) return list;
  list = el('div', { role: 'tablist', class: 'tabs', id: 'workspace-tabs', 'aria-label': 'Workspace views', hidden: true });
  list.addEventListener('keydown', (e) => {
    const i = tabs.findIndex((t) => t.tab === document.activeElement);
    if (i < 0) return;
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const next = tabs[(to + tabs.length) % tabs.length];
    select(next.id);
    next.tab.focus();
  });
  $('chat-pane').querySelector('.chat-head').after(list);
  return list;
}

function makeTab(id, label, panel) {
  const tab = el('button', {
    type: 'button', role: 'tab', id: `tab-${id}`, class: 'tab',
    'aria-controls': panel.id, 'aria-selected': 'false', tabindex: '-1',
  }, label);
  tab.addEventListener('click', () => select(id));
  panel.setAttribute('role', 'tabpanel');
  panel.setAttribute('aria-labelledby', tab.id);
  tabList().append(tab);
  return tab;
}

/**
 * Adds a tab whose panel is `panel` (appended to the chat pane, hidden
 * until selected). `show(ws)` runs each time it is selected for the open
 * workspace, `hide()` when another tab is.
 */
export function registerTab(id, label, panel, { show = () => {}, hide = () => {} } = {}) {
  if (!tabs.length) {
    // The conversation is the first tab.
    tabs.push({ id: 'chat', tab: makeTab('chat', 'Chat', $('chat-body')), panel: $('chat-body'), show: () => {}, hide: () => {} });
  }
  panel.hidden = true;
  panel.classList.add('tab-panel');
  $('chat-pane').append(panel);
  tabs.push({ id, tab: makeTab(id, label, panel), panel, show, hide });
}

/** Shows tab `id` of the open workspace and hides the others. */
export function select(id) {
  if (!state.current) return;
  for (const t of tabs) {
    const on = t.id === id;
    const was = t.tab.getAttribute('aria-selected') === 'true';
    t.tab.setAttribute('aria-selected', String(on));
    t.tab.tabIndex = on ? 0 : -1;
    t.panel.hidden = !on;
    if (on && !was) t.show(state.current);
    if (!on && was) t.hide();
  }
}

/** Follows the chat: tabs show while a workspace is open. */
export function initTabs() {
  bus.addEventListener('chat-open', () => {
    if (!list) return;
    list.hidden = false;
    for (const t of tabs) t.tab.setAttribute('aria-selected', 'false');
    select('chat');
  });
  bus.addEventListener('chat-close', () => {
    if (!list) return;
    list.hidden = true;
    for (const t of tabs) {
      if (t.tab.getAttribute('aria-selected') === 'true' && t.id !== 'chat') t.hide();
      t.tab.setAttribute('aria-selected', 'false');
      if (t.id !== 'chat') t.panel.hidden = true;
    }
  });
}
