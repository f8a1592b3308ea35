// molecule canvas: the operator's page. Plain ES modules, no build step, no
// dependencies; everything it talks to is the API of shared/API.md on this
// same origin, authenticated with the admin token kept in localStorage.
//
// This entry module owns the session (sign in and out, which view shows)
// and the routing; each part of the page lives in its own module of web/js/,
// which opens by saying what it is for. A new module needs no list: the
// server embeds and serves every file of web/js/, and writes its preload
// link into the page (build.rs, src/http/canvas.rs).

import { api } from './api.js';
import { startApprovals, stopApprovals } from './approvals.js';
import { initAttention } from './attention.js';
import { initShortcuts } from './shortcuts.js';
import { closeChat, initChat, openChat } from './chat.js';
import { loadConfig } from './config.js';
import { initCreate } from './create.js';
import { startHealth, stopHealth } from './health.js';
import { initAttach } from './attach.js';
import { initLifecycle } from './lifecycle.js';
import { initManage } from './manage.js';
import { initOrgImport } from './orgimport.js';
import { $, nextTask } from './dom.js';
import { initPanels } from './panels.js';
import { TOKEN_KEY, bus, state } from './state.js';
import { initTeamForm } from './teamform.js';
import { initUnread, pollActivity, startFleet, stopFleet } from './unread.js';
import { initUploads } from './uploads.js';
import { initWorkspaces, refreshWorkspaces, renderWorkspaces } from './workspaces.js';

const LIST_REFRESH_MS = 20_000; // online status changes on heartbeats, every few tens of seconds

function show(view) {
  document.body.dataset.view = view;
  const signedIn = view !== 'signin';
  $('signin-view').hidden = signedIn;
  $('app-view').hidden = !signedIn;
  $('signout').hidden = !signedIn;
}

async function signIn(token, reading = api('/workspaces', { token })) {
  // Check the token before keeping it: GET /workspaces is operator-only.
  const list = await reading;
  // The answer read (a long list is a long parse): the list is laid out
  // and drawn in a task of its own.
  await nextTask();
  state.token = token;
  localStorage.setItem(TOKEN_KEY, token);
  state.workspaces = list;
  enterApp();
}

function signOut(message = '') {
  closeChat();
  clearInterval(state.listTimer);
  stopHealth();
  stopApprovals();
  stopFleet();
  state.token = '';
  localStorage.removeItem(TOKEN_KEY);
  show('signin');
  $('signin-error').textContent = message;
  $('token').value = '';
  $('token').focus();
}

function enterApp() {
  show('list');
  renderWorkspaces();
  loadConfig().catch(() => {}); // until read, the page's defaults and the server's checks
  pollActivity().catch(() => {});
  startHealth();
  startApprovals();
  startFleet();
  clearInterval(state.listTimer);
  state.listTimer = setInterval(() => refreshWorkspaces().catch(() => {}), LIST_REFRESH_MS);
  route();
}

// `#/w/<id>` opens a chat, so a reload or a shared link keeps the view;
// `#/w/<id>/delegations/<did>` opens its Delegations tab at that ledger row
// (the link of a delegation in the conversation).
function route() {
  if (!state.token || !wiredDone) return;
  const m = location.hash.match(/^#\/w\/([0-9a-fA-F-]{36})(?:\/delegations\/([0-9a-fA-F-]{36}))?$/);
  if (!m) {
    closeChat();
    show('list');
    return;
  }
  const ws = state.workspaces.find((w) => w.id === m[1]);
  if (!ws) {
    closeChat();
    show('list');
    $('workspaces-error').textContent = 'That workspace does not exist (any more).';
    return;
  }
  // Opened from the list (a click, or Enter on a row): the work goes on in
  // the composer, not 11 Tabs back in the list.
  const fromList = Boolean(document.activeElement?.closest?.('#workspace-list'));
  if (state.current?.id !== ws.id) openChat(ws);
  show('chat');
  if (fromList && !m[2]) $('message').focus();
  if (m[2]) bus.dispatchEvent(new CustomEvent('show-delegation', { detail: m[2] }));
}

/**
 * The parts of the page, wired at start in this order, each in a task of
 * its own (with a thousand workspaces on a busy machine the whole of it in
 * one task, with the modules' evaluation, was the page's longest); the
 * workspace list is read meanwhile.
 */
const PARTS = [initWorkspaces, initAttention, initShortcuts, initCreate, initChat, initPanels, initUploads, initAttach,
  initUnread, initManage, initTeamForm, initLifecycle, initOrgImport];
/** Resolves once every part is wired; until then no chat opens. */
let wired = null;
let wiredDone = false;

async function init() {
  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    const err = $('signin-error');
    if (!token) {
      err.textContent = 'Enter the admin token.';
      $('token').focus();
      return;
    }
    err.textContent = '';
    const button = e.submitter || e.target.querySelector('button');
    button.disabled = true;
    try {
      await wired;
      await signIn(token);
      // Out of the form, focus goes to the heading of what is now shown
      // (not to <body>), so that keyboard and screen-reader users land there.
      $(document.body.dataset.view === 'chat' ? 'chat-title' : 'workspaces-title').focus();
    } catch (ex) {
      err.textContent = ex.status === 401 ? 'That token was refused. Check it and try again.' : ex.message;
      $('token').select();
    } finally {
      button.disabled = false;
    }
  });
  $('signout').addEventListener('click', () => signOut());
  bus.addEventListener('unauthorized', (e) => signOut(e.detail));
  window.addEventListener('hashchange', route);
  for (const part of PARTS) {
    await nextTask();
    await part();
  }
  wiredDone = true;
}

async function start() {
  wired = init();
  if (!state.token) {
    await wired;
    show('signin');
    $('token').focus();
    return;
  }
  // The list is read while the page's parts are wired.
  const list = api('/workspaces', { token: state.token });
  list.catch(() => {});
  await wired;
  try {
    await signIn(state.token, list);
  } catch (e) {
    if (e.status === 401) signOut('The saved token was refused. Sign in again.');
    else {
      show('signin');
      $('signin-error').textContent = e.message;
    }
  }
}

start();
