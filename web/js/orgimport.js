// The "Import a team" dialog: an org template (YAML or JSON, pasted or
// loaded from a file) is first sent as a dry run (POST
// /org/import?dry_run=true) and its answer shown as a diff, each node new
// or kept, under which parent; only "Import" applies it, and the tokens of
// the workspaces it created are shown this once. Editing the template
// after a preview withdraws the preview, so what is applied is always what
// was shown.

import { ApiError, errorOf, NETWORK_DOWN, unauthorized } from './api.js';
import { $, el } from './dom.js';
import { state } from './state.js';
import { refreshWorkspaces } from './workspaces.js';

/** JSON when it looks like JSON, YAML otherwise (the server sniffs the same way). */
const contentType = (text) => (/^\s*\{/.test(text) ? 'application/json' : 'application/yaml');

/** POSTs the template as it is (not JSON-encoded); throws ApiError. */
async function postTemplate(text, dryRun) {
  let res;
  try {
    res = await fetch(`/org/import${dryRun ? '?dry_run=true' : ''}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json', 'Content-Type': contentType(text) },
      body: text,
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, NETWORK_DOWN);
  }
  if (!res.ok) {
    if (res.status === 401) unauthorized();
    throw await errorOf(res);
  }
  return res.json();
}

/**
 * The report as table rows. Entries come parents first, depth first, so
 * a node's parent is the nearest earlier entry one level up: that names
 * it even for a parent that a dry run would only create.
 */
function rows(report) {
  const path = [];
  return report.workspaces.map((w) => {
    const depth = Number.isInteger(w.depth) ? w.depth : 0;
    path[depth] = w.name;
    const under = depth > 0 ? path[depth - 1] : '';
    const what = w.created
      ? (report.dry_run ? 'new: will be created' : 'created')
      : (report.dry_run ? 'exists: kept as it is' : 'kept (already existed)');
    // A kept workspace is shown as it is, not as the template would have
    // made it.
    const existing = w.created ? null : state.workspaces.find((x) => x.id === w.id);
    // Each cell names its column (data-label): on a phone the rows stack.
    const name = el('td', { class: 'import-name', dataset: { label: 'Workspace' } }, w.name);
    // CSSOM, not a style attribute: the page's CSP refuses inline styles.
    name.style.paddingInlineStart = `${0.5 + depth * 1.25}rem`;
    return el('tr', { dataset: { state: w.created ? 'created' : 'skipped' } },
      name,
      el('td', { dataset: { label: 'Under' } }, under || '—'),
      el('td', { class: 'import-what', dataset: { label: 'What happens' } }, what),
      el('td', { dataset: { label: 'Tier' } }, String(existing?.tier ?? w.tier)),
      el('td', { dataset: { label: 'Runtime' } }, existing?.runtime ?? w.runtime));
  });
}

/** Shows a report (a preview or the result) in the dialog. */
function showReport(report) {
  $('import-summary').textContent = report.dry_run
    ? `Preview: ${report.summary}. Nothing has been written yet.`
    : `Imported: ${report.summary}.`;
  $('import-rows').replaceChildren(...rows(report));
  $('import-preview').hidden = false;
  const apply = $('import-apply');
  apply.hidden = !report.dry_run || report.created === 0;
  apply.textContent = `Import ${report.created} new workspace${report.created === 1 ? '' : 's'}`;
  $('import-nothing').hidden = !report.dry_run || report.created > 0;
  const tokens = report.workspaces.filter((w) => w.auth_token);
  $('import-tokens').hidden = tokens.length === 0;
  $('import-token-list').value = tokens.map((w) => `${w.name}  ${w.id}  ${w.auth_token}`).join('\n');
  $('import-token-list').rows = Math.min(Math.max(tokens.length, 2), 10);
}

/** Hides the preview, the result and the tokens. */
function clearReport() {
  $('import-preview').hidden = true;
  $('import-rows').replaceChildren();
  $('import-summary').textContent = '';
  $('import-tokens').hidden = true;
  $('import-token-list').value = '';
  $('import-error').textContent = '';
}

/** Wires the Import button and its dialog; called once at start. */
export function initOrgImport() {
  const dialog = $('import-dialog');
  $('import-open').addEventListener('click', () => {
    clearReport();
    dialog.showModal();
    $('import-template').focus();
  });
  $('import-close').addEventListener('click', () => dialog.close());
  // However it closes, the tokens leave the page: they are shown once.
  dialog.addEventListener('close', clearReport);
  // A changed template needs a new preview before it can be applied.
  $('import-template').addEventListener('input', () => {
    if (!$('import-preview').hidden) clearReport();
  });

  $('import-file').addEventListener('change', async (e) => {
    const [file] = e.target.files;
    e.target.value = '';
    if (!file) return;
    $('import-template').value = await file.text();
    clearReport();
    $('import-template').focus();
  });

  $('import-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('import-template').value;
    clearReport();
    if (!text.trim()) {
      $('import-error').textContent = 'Paste a template or load a file first.';
      $('import-template').focus();
      return;
    }
    const button = e.submitter || $('import-preview-button');
    button.disabled = true;
    try {
      showReport(await postTemplate(text, true));
      $('import-summary').focus();
    } catch (ex) {
      $('import-error').textContent = `The template was refused: ${ex.message}`;
    } finally {
      button.disabled = false;
    }
  });

  $('import-apply').addEventListener('click', async () => {
    const text = $('import-template').value;
    const apply = $('import-apply');
    apply.disabled = true;
    $('import-error').textContent = '';
    try {
      showReport(await postTemplate(text, false));
      $('import-summary').focus();
      await refreshWorkspaces().catch(() => {});
    } catch (ex) {
      $('import-error').textContent = `Nothing was imported: ${ex.message}`;
    } finally {
      apply.disabled = false;
    }
  });
}
