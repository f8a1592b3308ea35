// The panels beyond the conversation: the workspace tabs (Secrets,
// Delegations, Memory, Schedules, Usage, Approvals, Tokens; the trace view) and the operator's global views, opened from the top
// bar (the approvals inbox, every delegation, the global secrets, the operator tokens). Each lives in its own
// module; this one wires them once at start.

import { initApprovals } from './approvals.js';
import { $, el, nextTask } from './dom.js';
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

/**
 * Builds the tabs and the top bar's buttons; called once at start. Each
 * panel is built in a task of its own (together they were one long task
 * of the page's start); resolves once all are.
 */
export async function initPanels() {
  initTabs();
  const openSecrets = initSecrets();
  await nextTask();
  const openDelegations = initDelegations();
  await nextTask();
  initMemory(() => state.workspaces);
  await nextTask();
  initSchedules();
  await nextTask();
  initUsage();
  await nextTask();
  initTrace();
  initSearch();
  await nextTask();
  const approvals = initApprovals();
  await nextTask();
  const openTokens = initTokens();
  await nextTask();
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
