// Message actions: copy a message (its Markdown as written), quote it
// into the composer, copy one code block, and retry a send that failed.
//
// A text bubble carries one small "⋯" button; pressing it moves the one
// shared toolbar (Copy, Quote) into that bubble, focus on its first
// button, Esc back to the "⋯". Nothing is built per row but that button,
// so a long conversation draws as fast as before. A code block gets its
// own "Copy code" button. A send that failed keeps its text for Retry.

import { $, el } from './dom.js';

const toolbar = el('div', { id: 'msg-actions', class: 'msg-actions', role: 'toolbar', 'aria-label': 'Copy or quote', hidden: true });
const said = el('p', { id: 'msg-actions-status', class: 'visually-hidden', role: 'status' });
let owner = null; // the "⋯" button whose bubble holds the toolbar

/** The Markdown a bubble shows (kept on its text block when drawn). */
function textOf(li) {
  const block = li.querySelector(':scope > .text');
  return block?.rawText ?? block?.textContent ?? '';
}

/** Copies `text`; says so (or why not) to screen readers and on the button. */
async function copy(text, button) {
  let message = 'Copied.';
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    message = 'The browser refused to copy.';
  }
  said.textContent = message;
  if (button) {
    const label = button.textContent;
    button.textContent = message === 'Copied.' ? 'Copied' : 'Not copied';
    setTimeout(() => { button.textContent = label; }, 1500);
  }
}

/** Puts `text` as a Markdown quote at the start of the composer. */
function quote(text) {
  const box = $('message');
  const quoted = text.trim().split('\n').map((line) => `> ${line}`).join('\n');
  box.value = `${quoted}\n\n${box.value}`;
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  hide();
}

function hide() {
  toolbar.hidden = true;
  owner?.setAttribute('aria-expanded', 'false');
  owner = null;
}

function toggle(button) {
  if (owner === button && !toolbar.hidden) {
    hide();
    return;
  }
  hide();
  owner = button;
  button.setAttribute('aria-expanded', 'true');
  button.closest('.msg-head').after(toolbar);
  toolbar.hidden = false;
  toolbar.querySelector('button').focus();
}

/** The "⋯" of a text bubble: shows the toolbar in it. */
export function actionsButton() {
  return el('button', {
    type: 'button',
    class: 'ghost msg-more',
    'aria-label': 'More actions',
    'aria-expanded': 'false',
    'aria-controls': 'msg-actions',
    title: 'Copy or quote this message',
  }, '⋯');
}

/**
 * A text block as drawn: its Markdown kept for Copy and Quote, and a
 * "Copy code" button on each code block (looked for only in text that
 * has one, not in every row).
 */
export function withCodeCopy(block, text) {
  block.rawText = text;
  if (!/```|~~~|\n {4}|^ {4}/.test(text)) return block;
  for (const pre of block.querySelectorAll('pre')) {
    pre.before(el('button', { type: 'button', class: 'ghost small code-copy' }, 'Copy code'));
  }
  return block;
}

/** The text that failed to send, for Retry. */
let unsent = '';

/** A send failed: keep its text and offer Retry next to the error. */
export function sendFailed(text) {
  unsent = text;
  $('send-retry').hidden = false;
}

/** A send went through: nothing to retry. */
export function sendDone() {
  unsent = '';
  $('send-retry').hidden = true;
}

/** Wires the toolbar and Retry; `resend(text)` sends again. Once at start. */
export function initMessageActions(resend) {
  toolbar.append(
    el('button', { type: 'button', class: 'ghost small', onclick: (e) => copy(textOf(e.target.closest('li')), e.target) }, 'Copy'),
    el('button', { type: 'button', class: 'ghost small', onclick: (e) => quote(textOf(e.target.closest('li'))) }, 'Quote'));
  toolbar.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      const back = owner;
      hide();
      back?.focus();
    } else if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
      const buttons = [...toolbar.querySelectorAll('button')];
      const at = buttons.indexOf(document.activeElement);
      buttons[(at + (e.key === 'ArrowRight' ? 1 : -1) + buttons.length) % buttons.length].focus();
    }
  });
  $('chat-body').append(said);
  $('messages').addEventListener('click', (e) => {
    const more = e.target.closest('.msg-more');
    if (more) {
      toggle(more);
      return;
    }
    const code = e.target.closest('.code-copy');
    if (code) copy(code.nextElementSibling?.textContent ?? '', code);
  });
  const retry = el('button', { type: 'button', id: 'send-retry', class: 'small', hidden: true }, 'Retry');
  retry.addEventListener('click', () => {
    if (unsent) resend(unsent);
  });
  $('send-error').after(retry);
}
