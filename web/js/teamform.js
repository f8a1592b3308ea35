// The team fields of the "New workspace" form: a parent picker (every
// workspace, indented as the tree draws it, or none for a new root) and a
// tier. Leaving the tier on "Default" sends none, so that the server's one
// rule (`--default-tier`) decides, as it does for the CLI and org import.

import { $, el } from './dom.js';
import { bus, state } from './state.js';

/** Options of the parent picker: the tree, depth first, siblings by name. */
function parentOptions() {
  const listed = new Set(state.workspaces.map((w) => w.id));
  const kids = new Map();
  for (const w of state.workspaces) {
    const p = w.parent_id && listed.has(w.parent_id) ? w.parent_id : '';
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(w);
  }
  const out = [];
  const seen = new Set();
  const walk = (parent, depth) => {
    const children = (kids.get(parent) || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    for (const w of children) {
      if (seen.has(w.id)) continue;
      seen.add(w.id);
      // Non-breaking spaces: an <option> shows no markup, only text.
      out.push(el('option', { value: w.id }, `${'\u00a0\u00a0\u00a0'.repeat(depth)}${w.name}`));
      walk(w.id, depth + 1);
    }
  };
  walk('', 0);
  return out;
}

/** Redraws the parent picker, keeping the choice while it still exists. */
function paintParents() {
  // Built only while the form is open: a fleet of thousands would cost
  // as many options on every change of the list.
  if (!$('create-details').open) return;
  const select = $('ws-parent');
  // Redrawn only when the tree changed: rebuilding a picker the operator
  // has open would close it under the pointer (and the list redraws often:
  // the options are built only then).
  const key = state.workspaces.map((w) => `${w.id}:${w.parent_id || ''}:${w.name}`).join('\n');
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const options = parentOptions();
  const chosen = select.value;
  select.replaceChildren(el('option', { value: '' }, 'None (a new team root)'), ...options);
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : '';
}

/** Names the server's default tier in the "Default" choice. */
function paintDefaultTier() {
  const tier = state.config?.default_tier;
  $('ws-tier').options[0].textContent = tier ? `Default (tier ${tier})` : 'Default';
}

/** The team part of the create request: `{parent_id?, tier?}`. */
export function teamFields() {
  const fields = {};
  if ($('ws-parent').value) fields.parent_id = $('ws-parent').value;
  if ($('ws-tier').value) fields.tier = Number($('ws-tier').value);
  return fields;
}

/** Wires the picker to the list and the tier to the settings; called once at start. */
export function initTeamForm() {
  bus.addEventListener('workspaces', paintParents);
  $('create-details').addEventListener('toggle', paintParents);
  bus.addEventListener('config', paintDefaultTier);
}
