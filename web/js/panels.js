// The panels beyond the conversation: the workspace tabs (Secrets,
// Delegations, Memory, Schedules) and the operator's global views, opened from the top
// bar (every delegation, the global secrets). Each lives in its own
// module; this one wires them once at start.

import { $, el } from './dom.js';
import { initDelegations } from './delegations.js';
import { initMemory } from './memory.js';
import { initSchedules } from './schedules.js';
import { initSecrets } from './secrets.js';
import { state } from './state.js';
import { initTabs } from './tabs.js';

/** Builds the tabs and the top bar's buttons; called once at start. */
export function initPanels() {
  initTabs();
  const openSecrets = initSecrets();
  const openDelegations = initDelegations();
  initMemory(() => state.workspaces);
  initSchedules();
  const nav = el('nav', { class: 'operator-nav', 'aria-label': 'Operator views' },
    el('button', { type: 'button', id: 'open-delegations', class: 'ghost', onclick: openDelegations }, 'Delegations'),
    el('button', { type: 'button', id: 'open-global-secrets', class: 'ghost', onclick: openSecrets }, 'Global secrets'));
  $('signout').before(nav);
}
