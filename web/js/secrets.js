// Secrets: the Secrets tab of a workspace and the global secrets every
// workspace inherits (a dialog from the top bar). The page lists keys and
// when they were last set, sets a value typed in a password field (cleared
// once saved) and deletes with a confirm. Values are write-only: the API
// never sends one back to the operator, so none is ever in the page.

import { api, wsPath } from './api.js';
import { ago, el } from './dom.js';
import { state } from './state.js';
import { registerTab } from './tabs.js';

const KEY_RE = /^[A-Z_][A-Z0-9_]{0,127}$/;

/**
 * A secrets panel. `base()` is the listing's path (`/admin/secrets` or a
 * workspace's `/workspaces/:id/secrets`), `what` names whose they are.
 * Returns `{ root, load() }`.
 */
function secretsPanel(prefix, headingLevel) {
  let base = null;
  const ids = (name) => `${prefix}-${name}`;
  const heading = el(headingLevel, { id: ids('title'), class: 'panel-title' }, 'Secrets');
  const intro = el('p', { class: 'hint', id: ids('intro') });
  const key = el('input', {
    id: ids('key'), name: 'key', required: true, maxlength: '128', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'characters', placeholder: 'API_KEY', 'aria-describedby': ids('key-hint'),
  });
  const value = el('input', {
    id: ids('value'), name: 'value', type: 'password', required: true, autocomplete: 'new-password', spellcheck: 'false',
  });
  const status = el('p', { class: 'hint', role: 'status', id: ids('status') });
  const error = el('p', { class: 'error', role: 'alert', id: ids('error') });
  const save = el('button', { type: 'submit', class: 'primary' }, 'Save secret');
  const form = el('form', { class: 'secret-form', novalidate: true, 'aria-labelledby': ids('form-title') },
    el('h4', { id: ids('form-title'), class: 'visually-hidden' }, 'Set a secret'),
    el('div', { class: 'field' }, el('label', { for: ids('key') }, 'Key'), key,
      el('p', { class: 'hint', id: ids('key-hint') }, 'Capitals, digits and _, not starting with a digit. Setting an existing key replaces its value.')),
    el('div', { class: 'field' }, el('label', { for: ids('value') }, 'Value'), value),
    save);
  const rows = el('tbody');
  const table = el('table', { class: 'data-table', id: ids('table') },
    el('caption', { class: 'visually-hidden' }, 'Secrets: keys and when they were last set'),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Key'), el('th', { scope: 'col' }, 'Last set'),
      el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Actions')))),
    rows);
  const empty = el('p', { class: 'hint', id: ids('empty'), hidden: true }, 'No secret yet.');
  const root = el('section', { class: 'panel secrets', 'aria-labelledby': ids('title') },
    heading, intro, form, status, error, table, empty);

  async function load() {
    if (!base) return;
    const at = base;
    try {
      const list = await api(at);
      if (at !== base) return; // another workspace opened meanwhile
      rows.replaceChildren(...list.map((s) => el('tr', { dataset: { key: s.key } },
        el('td', {}, el('code', {}, s.key)),
        el('td', { title: new Date(s.updated_at).toLocaleString() }, ago(s.updated_at, Date.now() + (state.skewMs ?? 0))),
        el('td', {}, el('button', { type: 'button', class: 'danger small', 'aria-label': `Delete ${s.key}`, onclick: () => remove(s.key) }, 'Delete')))));
      table.hidden = list.length === 0;
      empty.hidden = list.length !== 0;
    } catch (e) {
      if (at === base) error.textContent = `Could not list the secrets: ${e.message}`;
    }
  }

  async function remove(name) {
    status.textContent = '';
    error.textContent = '';
    if (!window.confirm(`Delete the secret ${name}? Agents stop receiving it; this cannot be undone.`)) return;
    try {
      await api(`${base}/${encodeURIComponent(name)}`, { method: 'DELETE' });
      status.textContent = `Deleted ${name}.`;
    } catch (e) {
      error.textContent = `Could not delete ${name}: ${e.message}`;
    }
    await load();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    status.textContent = '';
    error.textContent = '';
    const name = key.value.trim();
    if (!KEY_RE.test(name)) {
      error.textContent = 'The key must be capitals, digits and _ (up to 128), not starting with a digit.';
      key.focus();
      return;
    }
    if (!value.value) {
      error.textContent = 'Type the value to store.';
      value.focus();
      return;
    }
    save.disabled = true;
    try {
      await api(`${base}/${encodeURIComponent(name)}`, { method: 'PUT', body: { value: value.value } });
      value.value = ''; // the value leaves the page as soon as it is stored
      key.value = '';
      status.textContent = `Saved ${name}.`;
      await load();
    } catch (ex) {
      error.textContent = `Not saved: ${ex.message}`;
    } finally {
      save.disabled = false;
    }
  });

  return {
    root,
    /** Points the panel at a listing and reads it. */
    open(path, title, introText) {
      base = path;
      heading.textContent = title;
      intro.textContent = introText;
      value.value = '';
      status.textContent = '';
      error.textContent = '';
      rows.replaceChildren();
      table.hidden = true;
      empty.hidden = true;
      return load();
    },
    close() {
      base = null;
      value.value = '';
    },
  };
}

/** The workspace's Secrets tab and the top bar's Global secrets dialog. */
export function initSecrets() {
  const own = secretsPanel('ws-secrets', 'h3');
  const panel = el('div', { id: 'secrets-panel' }, own.root);
  registerTab('secrets', 'Secrets', panel, {
    show: (ws) => own.open(wsPath(ws.id, '/secrets'), `Secrets of ${ws.name}`,
      'Handed to this workspace\'s agent with the global secrets; its own win over a global one of the same key. Values are never shown back.'),
    hide: () => own.close(),
  });

  const global = secretsPanel('global-secrets', 'h3');
  const dialog = el('dialog', { id: 'global-secrets-dialog', class: 'panel-dialog', 'aria-labelledby': 'global-secrets-heading' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'global-secrets-heading' }, 'Global secrets'),
      el('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Close')),
    global.root);
  dialog.addEventListener('close', () => global.close());
  document.querySelector('main').append(dialog);
  return () => {
    dialog.showModal();
    global.open('/admin/secrets', 'Every workspace',
      'Every workspace inherits these; a workspace\'s own secret of the same key wins. Values are never shown back.');
  };
}
