// The conversation: turns activity rows into bubbles in the log, oldest
// first, each row once.

import { uploadChip } from './chips.js';
import { $, ago, el, formatSize } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { agentStatus, bus, serverNow, state } from './state.js';

/** Whether the reader sees the end of the log (within a few pixels). */
export function atBottom() {
  const log = $('log');
  return log.scrollHeight - log.scrollTop - log.clientHeight < 24;
}

/** Scrolls the log to the newest row when the reader is (or must be) there. */
export function scrollToBottom(force = false) {
  const log = $('log');
  if (force || atBottom()) log.scrollTop = log.scrollHeight;
}

const HOUR_MS = 3_600_000;

/** "just now", "5 min ago" within the hour; the clock time after. */
function timeText(iso) {
  const age = serverNow() - Date.parse(iso);
  if (age < 60_000) return 'just now';
  if (age < HOUR_MS) return ago(iso, serverNow());
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A row's time: relative while recent; hovering shows the full timestamp. */
function timeOf(row) {
  const d = new Date(row.created_at);
  const full = d.toLocaleString([], { dateStyle: 'full', timeStyle: 'medium' });
  return el('time', { datetime: row.created_at, title: full, 'data-relative': '' }, timeText(row.created_at));
}

/** Brings the relative times up to now (the page's one-second tick). */
function refreshTimes() {
  for (const t of document.querySelectorAll('#messages time[data-relative]')) {
    const text = timeText(t.dateTime);
    if (t.textContent !== text) t.textContent = text;
    if (serverNow() - Date.parse(t.dateTime) >= HOUR_MS) t.removeAttribute('data-relative');
  }
}
bus.addEventListener('tick', refreshTimes);

/** "Today", "Yesterday", or the date. */
function dayLabel(d) {
  const today = new Date(serverNow());
  const startOf = (x) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const days = Math.round((startOf(today) - startOf(d)) / 86_400_000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return d.toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

/** A day separator before the first row of each calendar day. */
function separateDay(log, row) {
  const d = new Date(row.created_at);
  const key = `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
  if (log.dataset.day === key) return;
  log.dataset.day = key;
  log.append(el('li', { class: 'day', dataset: { day: key } }, el('h3', {}, dayLabel(d))));
}

/**
 * Where a text message stands: `delivered` (a push workspace took it),
 * `queued` (in a poll workspace's inbox; "the agent is offline" while it
 * is), `picked up` (the agent's own poll fetched it: the workspace's
 * `inbox_picked_up_through` reached its id), `answered` (the agent spoke
 * after it).
 */
function setDelivery(msg, s) {
  let tag = msg.querySelector('.delivery');
  if (!tag) {
    tag = el('span', { class: 'delivery' });
    msg.querySelector('.msg-head').append(tag);
  }
  tag.dataset.state = s;
  paintDelivery(tag);
}

function paintDelivery(tag) {
  const through = state.current?.inbox_picked_up_through;
  if (tag.dataset.state === 'queued' && through != null && Number(tag.closest('.msg')?.dataset.id) <= through) {
    tag.dataset.state = 'picked up';
  }
  const s = tag.dataset.state;
  const offline = state.current && agentStatus(state.current) !== 'online';
  const text = s === 'queued' ? (offline ? 'queued: the agent is offline' : 'queued') : s;
  if (tag.textContent !== text) tag.textContent = text;
}
bus.addEventListener('tick', () => {
  for (const tag of document.querySelectorAll('#messages .delivery[data-state="queued"]')) paintDelivery(tag);
});

/** A message's text, formatted (the safe Markdown subset). */
const textBlock = (text) => el('div', { class: 'text' }, renderMarkdown(text));

/** The text parts of a JSON-RPC answer (a push workspace's reply). */
function textOfAnswer(answer) {
  const texts = [];
  const walk = (v, depth) => {
    if (!v || typeof v !== 'object' || depth > 6) return;
    if (Array.isArray(v)) {
      v.forEach((x) => walk(x, depth + 1));
      return;
    }
    if (v.kind === 'text' && typeof v.text === 'string') texts.push(v.text);
    for (const k of ['result', 'parts', 'artifacts', 'status', 'message']) walk(v[k], depth + 1);
  };
  walk(answer, 0);
  return texts.join('\n');
}

/** One message bubble: `side` is `out` (the operator) or `in` (the agent). */
export function bubble(side, who, row, ...content) {
  return el('li', { class: `msg msg-${side}`, dataset: { id: row.id, type: row.activity_type } },
    el('div', { class: 'msg-head' }, el('span', { class: 'who' }, who), timeOf(row)),
    ...content);
}

/** An attachment the agent sent: a link when its URI is one the browser can open. */
function agentAttachment(a) {
  const name = a.name || a.uri || 'file';
  const link = /^https?:\/\//i.test(a.uri || '');
  return el('li', { class: 'chip', title: a.uri || '' },
    link ? el('a', { class: 'chip-name', href: a.uri, target: '_blank', rel: 'noopener noreferrer', download: a.name || true }, name)
      : el('span', { class: 'chip-name' }, name),
    a.size ? el('span', { class: 'hint' }, formatSize(a.size)) : null);
}

/** The chip of a file a push workspace took at once (already delivered). */
function forwardedChip(data) {
  return el('li', { class: 'chip', dataset: { state: 'acked' }, title: data.uri || '' },
    el('span', { class: 'chip-name' }, data.filename || data.uri || 'file'),
    Number.isFinite(data.size) ? el('span', { class: 'hint' }, formatSize(data.size)) : null,
    el('span', { class: 'chip-state' }, 'delivered'));
}

/** Adds a file chip to the upload bubble of the moment, or starts one. */
function appendUpload(log, row, chip) {
  // Consecutive uploads share one bubble, as they were sent together.
  const last = log.lastElementChild;
  if (last?.dataset.type === 'upload' && new Date(row.created_at) - new Date(last.dataset.at) < 60_000) {
    last.querySelector('.chips').append(chip);
  } else {
    const b = bubble('out', 'You', row, el('ul', { class: 'chips', 'aria-label': 'Attachments' }, chip));
    b.dataset.type = 'upload';
    b.dataset.at = row.created_at;
    log.append(b);
  }
}

/**
 * Appends one activity row to the log; false when it was already shown.
 */
export function renderRow(row) {
  if (state.rendered.has(row.id)) return false;
  state.rendered.add(row.id);
  state.lastId = Math.max(state.lastId, row.id);
  const log = $('messages');
  const data = row.data || {};
  separateDay(log, row);

  if (row.activity_type === 'a2a_receive' && row.method === 'chat_upload_receive') {
    appendUpload(log, row, uploadChip(data));
  } else if (row.activity_type === 'a2a_receive' && row.method === 'chat_upload_forward') {
    appendUpload(log, row, forwardedChip(data));
  } else if (row.activity_type === 'a2a_receive') {
    const who = data.source === 'peer_agent' ? `Peer ${data.source_id || 'agent'}` : 'You';
    const b = bubble('out', who, row, textBlock(data.text ?? row.summary ?? ''));
    if (row.status === 'forwarded') setDelivery(b, 'delivered');
    else if (row.status === 'queued') setDelivery(b, 'queued');
    log.append(b);
    // A push workspace answers inline: its reply is stored on the same row.
    if (row.response_body) {
      const reply = textOfAnswer(row.response_body);
      if (reply) log.append(bubble('in', state.current?.name || 'Agent', row, textBlock(reply)));
    }
  } else if (row.activity_type === 'agent_message') {
    // The agent speaking proves it read its inbox up to here.
    for (const q of log.querySelectorAll('.delivery[data-state="queued"], .delivery[data-state="picked up"]')) setDelivery(q.closest('.msg'), 'answered');
    const attachments = Array.isArray(data.attachments) ? data.attachments : [];
    log.append(bubble('in', state.current?.name || 'Agent', row,
      textBlock(data.text ?? row.summary ?? ''),
      attachments.length
        ? el('ul', { class: 'chips', 'aria-label': 'Attachments from the agent' }, ...attachments.map(agentAttachment))
        : null));
  } else {
    // Anything else the agent reported: one quiet line.
    const text = [row.activity_type, row.method, row.summary, row.status, row.error_detail].filter(Boolean).join(' · ');
    log.append(el('li', { class: 'msg msg-note', dataset: { id: row.id } }, timeOf(row), ' ', text));
  }
  return true;
}
