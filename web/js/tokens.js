// Tokens: the Tokens tab of a workspace (its own tokens, one per machine)
// and the operator tokens (a dialog from the top bar: named credentials
// with a role, an optional team subtree and expiry). Both list id, name,
// prefix, when last used and when they expire, never a secret; minting
// shows the new secret exactly once, with a copy button, and it leaves the
// page when that notice is dismissed or the panel closes; revoking asks
// first, since whatever holds the token is cut off at once.

import { api, wsPath } from './api.js';
import { ago, el } from './dom.js';
import { state } from './state.js';
import { registerTab } from './tabs.js';

const ROLES = ['viewer', 'operator', 'admin'];

const when = (iso) => (iso ? ago(iso, Date.now() + (state.skewMs ?? 0)) : 'never');

/**
 * A tokens panel; `org` adds the role and team fields of operator tokens.
 * Returns `{ root, open(base, title, intro), close() }`.
 */
function tokensPanel(prefix, org) {
  let base = null;
  let shownId = null; // the token whose secret is shown, if one is
  const ids = (name) => `${prefix}-${name}`;
  const heading = el('h3', { id: ids('title'), class: 'panel-title' }, 'Tokens');
  const intro = el('p', { class: 'hint', id: ids('intro') });
  const name = el('input', { id: ids('name'), name: 'name', maxlength: '100', autocomplete: 'off', placeholder: 'ci, laptop, …' });
  const expires = el('input', { id: ids('expires'), name: 'expires', type: 'number', min: '1', step: '1', inputmode: 'numeric', 'aria-describedby': ids('expires-hint') });
  const role = el('select', { id: ids('role'), name: 'role' }, ...ROLES.map((r) => el('option', { value: r }, r)));
  const team = el('select', { id: ids('team'), name: 'team' });
  const fields = [
    el('div', { class: 'field' }, el('label', { for: ids('name') }, 'Name (optional)'), name),
    el('div', { class: 'field' }, el('label', { for: ids('expires') }, 'Expires after (days, optional)'), expires,
      el('p', { class: 'hint', id: ids('expires-hint') }, 'Empty: it works until revoked.')),
  ];
  if (org) {
    fields.push(
      el('div', { class: 'field' }, el('label', { for: ids('role') }, 'Role'), role,
        el('p', { class: 'hint' }, 'viewer: reads only. operator: everything but tokens and global secrets. admin: everything.')),
      el('div', { class: 'field' }, el('label', { for: ids('team') }, 'Limited to the team of'), team),
    );
  }
  const mint = el('button', { type: 'submit', class: 'primary' }, 'Create token');
  const form = el('form', { class: 'token-form', novalidate: true, 'aria-labelledby': ids('form-title') },
    el('h4', { id: ids('form-title'), class: 'visually-hidden' }, 'Create a token'), ...fields, mint);
  const secret = el('code', { id: ids('secret'), class: 'token-secret' });
  const copyStatus = el('p', { class: 'hint', role: 'status', id: ids('copy-status') });
  const copy = el('button', { type: 'button', id: ids('copy'), class: 'primary' }, 'Copy the token');
  const done = el('button', { type: 'button', id: ids('done'), class: 'ghost' }, 'Done: hide it');
  const minted = el('div', { class: 'token-minted', id: ids('minted'), role: 'region', 'aria-labelledby': ids('minted-title'), hidden: true },
    el('p', { id: ids('minted-title') }, el('strong', {}, 'The new token, shown this once: '), 'copy it now; the server keeps only its hash.'),
    secret, el('div', { class: 'actions' }, copy, done), copyStatus);
  const status = el('p', { class: 'hint', role: 'status', id: ids('status') });
  const error = el('p', { class: 'error', role: 'alert', id: ids('error') });
  const rows = el('tbody');
  const headers = ['Name', 'Prefix', ...(org ? ['Role', 'Team'] : []), 'Last used', 'Expires'];
  const table = el('table', { class: 'data-table', id: ids('table') },
    el('caption', { class: 'visually-hidden' }, 'Live tokens: never their secret'),
    el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h)),
      el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Actions')))),
    rows);
  const empty = el('p', { class: 'hint', id: ids('empty'), hidden: true }, 'No live token.');
  const root = el('section', { class: 'panel tokens', 'aria-labelledby': ids('title') },
    heading, intro, form, minted, status, error, table, empty);

  const teamName = (id) => state.workspaces.find((w) => w.id === id)?.name || id;

  function hideSecret() {
    shownId = null;
    secret.textContent = '';
    copyStatus.textContent = '';
    minted.hidden = true;
  }

  async function load() {
    if (!base) return;
    const at = base;
    try {
      const { tokens } = await api(`${at}?limit=100`);
      if (at !== base) return; // another workspace opened meanwhile
      rows.replaceChildren(...tokens.map((t) => {
        const label = t.name || t.prefix;
        return el('tr', { dataset: { id: t.id } },
          el('td', {}, t.name || el('span', { class: 'hint' }, 'unnamed')),
          el('td', {}, el('code', {}, `${t.prefix}…`)),
          ...(org ? [el('td', {}, t.role), el('td', {}, t.team_root ? teamName(t.team_root) : 'every workspace')] : []),
          el('td', { title: t.last_used_at ? new Date(t.last_used_at).toLocaleString() : '' }, when(t.last_used_at)),
          el('td', {}, t.expires_at ? new Date(t.expires_at).toLocaleString() : 'never'),
          el('td', {}, el('button', { type: 'button', class: 'danger small', 'aria-label': `Revoke ${label}`, onclick: () => revoke(t.id, label) }, 'Revoke')));
      }));
      table.hidden = tokens.length === 0;
      empty.hidden = tokens.length !== 0;
    } catch (e) {
      if (at === base) error.textContent = `Could not list the tokens: ${e.message}`;
    }
  }

  async function revoke(id, label) {
    status.textContent = '';
    error.textContent = '';
    const sure = window.confirm(`Revoke the token ${label}? Whatever uses it is cut off at once, `
      + 'including streams and long polls already open; this cannot be undone.');
    if (!sure) return;
    try {
      await api(`${base}/${id}`, { method: 'DELETE' });
      if (id === shownId) hideSecret();
      status.textContent = `Revoked ${label}.`;
    } catch (e) {
      error.textContent = `Could not revoke ${label}: ${e.message}`;
    }
    await load();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    status.textContent = '';
    error.textContent = '';
    hideSecret();
    const body = {};
    if (name.value.trim()) body.name = name.value.trim();
    if (expires.value) {
      const days = Number(expires.value);
      if (!Number.isInteger(days) || days < 1) {
        error.textContent = 'The expiry is a whole number of days, 1 or more (or empty).';
        expires.focus();
        return;
      }
      body.expires_in_s = days * 86400;
    }
    if (org) {
      body.role = role.value;
      if (team.value) body.team_root = team.value;
    }
    mint.disabled = true;
    try {
      const made = await api(base, { method: 'POST', body });
      secret.textContent = made.auth_token;
      shownId = made.id;
      minted.hidden = false;
      name.value = '';
      expires.value = '';
      copy.focus();
      await load();
    } catch (ex) {
      error.textContent = `Not created: ${ex.message}`;
    } finally {
      mint.disabled = false;
    }
  });
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(secret.textContent);
      copyStatus.textContent = 'Copied to the clipboard.';
    } catch {
      copyStatus.textContent = 'Select and copy the token above (Ctrl+C / ⌘C): the browser refused clipboard access.';
    }
  });
  done.addEventListener('click', () => {
    hideSecret();
    mint.focus();
  });

  return {
    root,
    /** Points the panel at a listing and reads it. */
    open(path, title, introText) {
      base = path;
      heading.textContent = title;
      intro.textContent = introText;
      hideSecret();
      status.textContent = '';
      error.textContent = '';
      rows.replaceChildren();
      table.hidden = true;
      empty.hidden = true;
      if (org) {
        team.replaceChildren(el('option', { value: '' }, 'every workspace'),
          ...state.workspaces.map((w) => el('option', { value: w.id }, w.name)));
      }
      return load();
    },
    /** Forgets the listing, and the secret if one is still shown. */
    close() {
      base = null;
      hideSecret();
    },
  };
}

/** The workspace's Tokens tab and the top bar's operator tokens dialog. */
export function initTokens() {
  const own = tokensPanel('ws-tokens', false);
  const panel = el('div', { id: 'tokens-panel' }, own.root);
  registerTab('tokens', 'Tokens', panel, {
    show: (ws) => own.open(wsPath(ws.id, '/tokens'), `Tokens of ${ws.name}`,
      'Each machine that runs this workspace\'s agent can have its own token (up to 50), revoked on its own.'),
    hide: () => own.close(),
  });

  const orgPanel = tokensPanel('org-tokens', true);
  const dialog = el('dialog', { id: 'org-tokens-dialog', class: 'panel-dialog', 'aria-labelledby': 'org-tokens-heading' },
    el('div', { class: 'dialog-head' },
      el('h2', { id: 'org-tokens-heading' }, 'Operator tokens'),
      el('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Close')),
    orgPanel.root);
  dialog.addEventListener('close', () => orgPanel.close());
  document.querySelector('main').append(dialog);
  return () => {
    dialog.showModal();
    orgPanel.open('/org/tokens', 'Operator tokens',
      'Credentials for people and jobs that run the org, each with a role; the first-start admin token stays as it is.');
  };
}
