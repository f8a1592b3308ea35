// The panels beyond the conversation: the workspace tabs (Secrets,
// Delegations, Memory, Schedules, Usage, Approvals, Tokens; the trace view) and the operator's global views, opened from the top
// bar (the approvals inbox, every delegation, the global secrets, the operator tokens). Each lives in its own
// module; this one wires them once at start.

import { initApprovals } from './approvals.js';
import { $, el } from './dom.js';
import { initDelegations } from './delegations.js';
import { initMemory } from './memory.js';
import { initSchedules } from './schedules.js';
import { initSearch } from './search.js';
import { initSecrets } from './secrets.js';
import { state } from './state.js';
import { initTabs } from './tabs.js';
import { initTeamOps } from './teamops.js';
import { initThreads } from './threads.js';
import { initTokens } from './tokens.js';
import { initTopology } from './topology.js';
import { initTrace } from './trace.js';
import { initUsage } from './usage.js';

/** Builds the tabs and the top bar's buttons; called once at start. */
export function initPanels() {
  initTabs();
  const openSecrets = initSecrets();
  const openDelegations = initDelegations();
  initMemory(() => state.workspaces);
  initSchedules();
  initUsage();
  initTrace();
  initSearch();
  const approvals = initApprovals();
  const openTokens = initTokens();
  initThreads();
  initTeamOps();
  const openTopology = initTopology();
  const nav = el('nav', { class: 'operator-nav', 'aria-label': 'Operator views' },
    approvals,
    el('button', { type: 'button', id: 'open-delegations', class: 'ghost', onclick: openDelegations }, 'Delegations'),
    // "Global" leaves the phone's one-row top bar (it stays in the name).
    el('button', { type: 'button', id: 'open-global-secrets', class: 'ghost', onclick: openSecrets },
      el('span', { class: 'wide-only' }, 'Global '), 'secrets'),
    el('button', { type: 'button', id: 'open-org-tokens', class: 'ghost', onclick: openTokens }, 'Tokens'));
  $('signout').before(nav);
  // The team view sits with the list it draws (the top bar has no room on a phone).
  $('refresh').before(el('button', { type: 'button', id: 'open-topology', class: 'ghost', onclick: openTopology }, 'Topology'));
}
