// The Memory tab of a workspace: the scoped memories it may read (its
// LOCAL ones, its team's TEAM ones, every GLOBAL one) with a search box
// (the server's hybrid recall) and a scope filter, a form to commit one as
// the workspace, and its key/value memory as a table whose rows are
// edited (with the version read, so a concurrent write is a clear 409,
// never a silent overwrite) and deleted with a confirm.

import { api, wsPath } from './api.js';
import { ago, el } from './dom.js';
import { serverNow } from './state.js';
import { registerTab } from './tabs.js';

const SCOPES = ['LOCAL', 'TEAM', 'GLOBAL'];
const LIMIT = 50;
const VALUE_PREVIEW = 200;

/** A JSON value as one line, shortened. */
function preview(value) {
  const text = JSON.stringify(value);
  return text.length > VALUE_PREVIEW ? `${text.slice(0, VALUE_PREVIEW - 1)}…` : text;
}

/** What the operator typed: JSON if it parses, else the text as a string. */
function parseValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function field(id, labelText, control, hint) {
  return el('div', { class: 'field' }, el('label', { for: id }, labelText), control,
    hint ? el('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

/** The Memory tab; `show(ws)` points it at a workspace. */
function memoryPanel() {
  let ws = null;
  let generation = 0; // bumped per open: late answers for another workspace are dropped
  const names = new Map();

  // ---------------------------------------------------------- scoped memories
  const query = el('input', { id: 'mem-q', type: 'search', autocomplete: 'off', placeholder: 'staging database port' });
  const scope = el('select', { id: 'mem-scope' },
    el('option', { value: '' }, 'Every scope'), ...SCOPES.map((s) => el('option', { value: s }, s)));
  const searchForm = el('form', { class: 'panel-tools', role: 'search', 'aria-label': 'Search memories', novalidate: true },
    el('label', { for: 'mem-q' }, 'Search'), query,
    el('label', { for: 'mem-scope' }, 'Scope'), scope,
    el('button', { type: 'submit' }, 'Search'));
  const results = el('ul', { class: 'memory-list', id: 'mem-results', 'aria-labelledby': 'mem-title' });
  const resultsNote = el('p', { class: 'hint', id: 'mem-note', role: 'status' });
  const memError = el('p', { class: 'error', role: 'alert' });

  const content = el('textarea', { id: 'mem-content', rows: '2', maxlength: '65536' });
  const commitScope = el('select', { id: 'mem-commit-scope' }, ...SCOPES.map((s) => el('option', { value: s }, s)));
  const commitForm = el('form', { class: 'memory-commit', novalidate: true, 'aria-labelledby': 'mem-commit-title' },
    el('h4', { id: 'mem-commit-title' }, 'Remember something as this workspace'),
    field('mem-content', 'Memory', content),
    field('mem-commit-scope', 'Visible to', commitScope,
      'LOCAL: this workspace only. TEAM: also its parent, children and siblings. GLOBAL: the whole tree.'),
    el('button', { type: 'submit', class: 'primary' }, 'Commit memory'));
  commitScope.setAttribute('aria-describedby', 'mem-commit-scope-hint');

  function renderMemory(m) {
    const own = m.workspace_id === ws.id;
    const from = own ? 'this workspace' : (names.get(m.workspace_id) || m.workspace_id.slice(0, 8));
    const meta = [`${m.namespace}`, `from ${from}`, ago(m.created_at, serverNow())];
    if (typeof m.score === 'number' && query.value.trim()) meta.push(`score ${m.score.toFixed(3)}`);
    return el('li', { class: 'memory', dataset: { mid: m.id, scope: m.scope } },
      el('div', { class: 'dhead' }, el('span', { class: `mchip mchip-${m.scope.toLowerCase()}` }, m.scope),
        el('span', { class: 'hint' }, meta.join(' · ')),
        own ? el('button', { type: 'button', class: 'danger small', 'aria-label': `Delete the memory “${m.content.slice(0, 40)}”`, onclick: () => forget(m) }, 'Delete') : null),
      el('p', { class: 'mcontent' }, m.content));
  }

  // The newest-first listing shows its total and pages on ("Load more");
  // a search by words is ranked and has no pages.
  const more = el('button', { type: 'button', class: 'ghost', id: 'mem-more', hidden: true }, 'Load more');
  let total = null;

  function note(q) {
    const shown = results.children.length;
    const what = (n) => (n === 1 ? '1 memory' : `${n.toLocaleString()} memories`);
    if (q) resultsNote.textContent = `${what(shown)} for “${q}”, best first.`;
    else if (total !== null && total > shown) resultsNote.textContent = `Showing ${shown.toLocaleString()} of ${what(total)}, newest first.`;
    else resultsNote.textContent = `${what(shown)}, newest first.`;
  }

  async function search(before = null) {
    if (!ws) return;
    const mine = generation;
    const params = new URLSearchParams({ limit: String(LIMIT) });
    const q = query.value.trim();
    if (q) params.set('q', q);
    if (scope.value) params.set('scope', scope.value);
    if (before) params.set('before', before);
    try {
      const { body: rows, headers } = await api(wsPath(ws.id, `/memories?${params}`), { withHeaders: true });
      if (mine !== generation) return;
      memError.textContent = '';
      const counted = headers.get('X-Total-Count');
      total = counted === null ? null : Number(counted);
      if (before) results.append(...rows.map(renderMemory));
      else results.replaceChildren(...rows.map(renderMemory));
      more.hidden = Boolean(q) || total === null || results.children.length >= total;
      note(q);
    } catch (e) {
      if (mine === generation) memError.textContent = `Could not read the memories: ${e.message}`;
    }
  }

  more.addEventListener('click', () => {
    const last = results.lastElementChild?.dataset.mid;
    if (last) search(last);
  });

  async function forget(m) {
    if (!window.confirm(`Delete this memory? “${m.content.slice(0, 80)}” — this cannot be undone.`)) return;
    try {
      await api(wsPath(ws.id, `/memories/${encodeURIComponent(m.id)}`), { method: 'DELETE' });
      resultsNote.textContent = 'Memory deleted.';
    } catch (e) {
      memError.textContent = `Could not delete the memory: ${e.message}`;
    }
    await search();
  }

  searchForm.addEventListener('submit', (e) => {
    e.preventDefault();
    search();
  });
  scope.addEventListener('change', () => search());
  commitForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    memError.textContent = '';
    if (!content.value.trim()) {
      memError.textContent = 'Write the memory first.';
      content.focus();
      return;
    }
    try {
      await api(wsPath(ws.id, '/memories'), { method: 'POST', body: { content: content.value, scope: commitScope.value } });
      content.value = '';
      resultsNote.textContent = 'Memory committed.';
      await search();
    } catch (ex) {
      memError.textContent = `Not committed: ${ex.message}`;
    }
  });

  // ---------------------------------------------------------- key/value
  const kvRows = el('tbody');
  const kvTable = el('table', { class: 'data-table', id: 'kv-table' },
    el('caption', { class: 'visually-hidden' }, 'Key/value memory'),
    el('thead', {}, el('tr', {}, ...['Key', 'Value', 'Version', 'Expires'].map((h) => el('th', { scope: 'col' }, h)),
      el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Actions')))),
    kvRows);
  const kvEmpty = el('p', { class: 'hint', hidden: true }, 'No key yet.');
  const kvStatus = el('p', { class: 'hint', role: 'status', id: 'kv-status' });
  const kvError = el('p', { class: 'error', role: 'alert', id: 'kv-error' });
  const kvKey = el('input', { id: 'kv-key', autocomplete: 'off', spellcheck: 'false', maxlength: '256' });
  const kvValue = el('textarea', { id: 'kv-value', rows: '3', spellcheck: 'false', 'aria-describedby': 'kv-value-hint' });
  const kvTtl = el('input', { id: 'kv-ttl', type: 'number', min: '1', inputmode: 'numeric', 'aria-describedby': 'kv-ttl-hint' });
  const kvSave = el('button', { type: 'submit', class: 'primary' }, 'Save key');
  const kvCancel = el('button', { type: 'button', hidden: true }, 'Cancel the edit');
  const kvTitle = el('h4', { id: 'kv-form-title' }, 'Add a key');
  const kvForm = el('form', { class: 'kv-form', novalidate: true, 'aria-labelledby': 'kv-form-title' },
    kvTitle,
    field('kv-key', 'Key', kvKey),
    field('kv-value', 'Value', kvValue, 'JSON (a number, "text", [1, 2], {"a": 1}); anything else is stored as text.'),
    field('kv-ttl', 'Expires after (seconds, optional)', kvTtl, 'Empty: never.'),
    el('div', { class: 'row' }, kvSave, kvCancel));
  let editing = null; // the entry being edited: {key, version}

  function resetForm() {
    editing = null;
    kvTitle.textContent = 'Add a key';
    kvKey.readOnly = false;
    kvKey.value = '';
    kvValue.value = '';
    kvTtl.value = '';
    kvCancel.hidden = true;
  }

  function edit(entry) {
    editing = { key: entry.key, version: entry.version };
    kvTitle.textContent = `Edit ${entry.key} (version ${entry.version})`;
    kvKey.value = entry.key;
    kvKey.readOnly = true;
    kvValue.value = JSON.stringify(entry.value, null, 2);
    kvTtl.value = '';
    kvCancel.hidden = false;
    kvStatus.textContent = '';
    kvError.textContent = '';
    kvValue.focus();
  }

  async function loadKeys() {
    if (!ws) return;
    const mine = generation;
    try {
      const rows = await api(wsPath(ws.id, '/memory'));
      if (mine !== generation) return;
      kvRows.replaceChildren(...rows.map((entry) => el('tr', { dataset: { key: entry.key, version: String(entry.version) } },
        el('td', {}, el('code', {}, entry.key)),
        el('td', { class: 'kv-value' }, el('code', {}, preview(entry.value))),
        el('td', {}, String(entry.version)),
        el('td', {}, entry.expires_at ? new Date(entry.expires_at).toLocaleString() : 'never'),
        el('td', {},
          el('button', { type: 'button', class: 'small', 'aria-label': `Edit ${entry.key}`, onclick: () => edit(entry) }, 'Edit'),
          ' ',
          el('button', { type: 'button', class: 'danger small', 'aria-label': `Delete ${entry.key}`, onclick: () => removeKey(entry.key) }, 'Delete')))));
      kvTable.hidden = rows.length === 0;
      kvEmpty.hidden = rows.length !== 0;
    } catch (e) {
      if (mine === generation) kvError.textContent = `Could not read the keys: ${e.message}`;
    }
  }

  async function removeKey(key) {
    kvStatus.textContent = '';
    kvError.textContent = '';
    if (!window.confirm(`Delete the key ${key}? This cannot be undone.`)) return;
    try {
      await api(wsPath(ws.id, `/memory/${encodeURIComponent(key)}`), { method: 'DELETE' });
      kvStatus.textContent = `Deleted ${key}.`;
      if (editing?.key === key) resetForm();
    } catch (e) {
      kvError.textContent = `Could not delete ${key}: ${e.message}`;
    }
    await loadKeys();
  }

  kvCancel.addEventListener('click', resetForm);
  kvForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    kvStatus.textContent = '';
    kvError.textContent = '';
    const key = kvKey.value.trim();
    if (!key) {
      kvError.textContent = 'Name the key.';
      kvKey.focus();
      return;
    }
    const body = { key, value: parseValue(kvValue.value.trim()) };
    if (kvTtl.value) body.ttl_s = Number(kvTtl.value);
    // An edit writes over the version it read; an add only if the key is new.
    body.if_version = editing ? editing.version : 0;
    kvSave.disabled = true;
    try {
      const saved = await api(wsPath(ws.id, '/memory'), { method: 'POST', body });
      kvStatus.textContent = `Saved ${saved.key} (version ${saved.version}).`;
      resetForm();
      await loadKeys();
    } catch (ex) {
      kvError.textContent = ex.status === 409
        ? `Not saved: ${ex.message}. The key changed meanwhile (or already exists): the table now shows its current value.`
        : `Not saved: ${ex.message}`;
      if (ex.status === 409) await loadKeys();
    } finally {
      kvSave.disabled = false;
    }
  });

  const root = el('div', { id: 'memory-panel' },
    el('section', { class: 'panel memories', 'aria-labelledby': 'mem-title' },
      el('h3', { id: 'mem-title', class: 'panel-title' }, 'Memories'),
      el('p', { class: 'hint' }, 'What this workspace may recall: its LOCAL memories, its team\'s TEAM ones and every GLOBAL one.'),
      searchForm, memError, resultsNote, results, more, commitForm),
    el('section', { class: 'panel kv', 'aria-labelledby': 'kv-title' },
      el('h3', { id: 'kv-title', class: 'panel-title' }, 'Key/value memory'),
      kvStatus, kvError, kvTable, kvEmpty, kvForm));

  return {
    root,
    async show(workspace, everyone) {
      ws = workspace;
      generation += 1;
      names.clear();
      for (const w of everyone) names.set(w.id, w.name);
      query.value = '';
      scope.value = '';
      results.replaceChildren();
      resultsNote.textContent = '';
      memError.textContent = '';
      kvStatus.textContent = '';
      kvError.textContent = '';
      resetForm();
      await Promise.all([search(), loadKeys()]);
    },
    hide() {
      ws = null;
      generation += 1;
    },
  };
}

/** Registers the Memory tab. */
export function initMemory(workspaces) {
  const panel = memoryPanel();
  registerTab('memory', 'Memory', panel.root, {
    show: (ws) => panel.show(ws, workspaces()),
    hide: () => panel.hide(),
  });
}
