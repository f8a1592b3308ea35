// The conversation: turns activity rows into bubbles and notes in the log.
//
// The rows of the open chat fetched so far are kept in `state.rows`
// (oldest first; the newest page is fetched on open, older ones as the
// reader scrolls up), but only the newest page is in the DOM when a chat
// opens; older pages are drawn as the reader scrolls up (`showOlder`). Nothing here walks the DOM
// per row: the rows that still change after they are drawn (relative
// times, delivery tags, delegation chips) are kept in sets and maps, and
// one timer (the page's `tick`) updates them.
//
// Who speaks is the row's own word: the operator's messages are "You";
// a peer's message, a task another agent (or the operator) delegated, and
// the result of a delegation say who asked whom, with the ledger's status
// chip and a link to the ledger row.

import { agentFileChip, uploadChip } from './chips.js';
import { $, ago, dateFormat, el, formatSize } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { actionsButton, withCodeCopy } from './msgactions.js';
import { agentStatus, bus, serverNow, state } from './state.js';
import { traceButton, traceIdOf } from './trace.js';

/** Rows drawn at once: the newest page on open, then one page per scroll-up. */
export const PAGE = 100;
/** Of the newest page, the rows drawn first: more than a screenful. */
export const FIRST_DRAW = 20;
/** The rest of the newest page is drawn this many rows per task. */
export const SLICE = 10;

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
// Formatters made once (on first use): `toLocaleString` builds one per
// call, which is most of the cost of drawing a long conversation.
const FULL = dateFormat({ dateStyle: 'full', timeStyle: 'medium' });
const CLOCK = dateFormat({ hour: '2-digit', minute: '2-digit' });
const DATE = dateFormat({ weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });

/** "just now", "5 min ago" within the hour; the clock time after. */
function timeText(iso) {
  const age = serverNow() - Date.parse(iso);
  if (age < 60_000) return 'just now';
  if (age < HOUR_MS) return ago(iso, serverNow());
  return CLOCK.format(new Date(iso));
}

/** A row's time: relative while recent; hovering shows the full timestamp. */
function timeOf(row) {
  const recent = serverNow() - Date.parse(row.created_at) < HOUR_MS;
  const t = el('time', { datetime: row.created_at, title: FULL.format(new Date(row.created_at)) }, timeText(row.created_at));
  if (recent) state.relTimes.add(t);
  return t;
}

/** Brings the relative times up to now (the page's one tick). */
function refreshTimes() {
  for (const t of state.relTimes) {
    if (!t.isConnected) {
      state.relTimes.delete(t);
      continue;
    }
    const text = timeText(t.dateTime);
    if (t.textContent !== text) t.textContent = text;
    if (serverNow() - Date.parse(t.dateTime) >= HOUR_MS) state.relTimes.delete(t);
  }
}

/** "Today", "Yesterday", or the date. */
function dayLabel(d) {
  const today = new Date(serverNow());
  const startOf = (x) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const days = Math.round((startOf(today) - startOf(d)) / 86_400_000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return DATE.format(d);
}

const dayKey = (d) => `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;

/** A day separator before the first row of each calendar day (per drawing context). */
function separateDay(ctx, row) {
  const d = new Date(row.created_at);
  const key = dayKey(d);
  if (ctx.day === key) return;
  ctx.day = key;
  ctx.upload = null;
  ctx.parent.append(el('li', { class: 'day', dataset: { day: key } }, el('h3', {}, dayLabel(d))));
}

/**
 * Where an operator's text message stands: `delivered` (a push workspace
 * took it), `queued` (in a poll workspace's inbox; "the agent is offline"
 * while it is), `picked up` (the agent's own poll fetched it: the
 * workspace's `inbox_picked_up_through` reached its id), `answered` (the
 * agent spoke after it). Tags still queued or picked up are kept in
 * `state.pending` for the tick and for the agent's next message.
 */
function deliveryTag(row, s) {
  const tag = el('span', { class: 'delivery', dataset: { state: s, id: row.id } });
  paintDelivery(tag);
  if (tag.dataset.state === 'queued' || tag.dataset.state === 'picked up') state.pending.add(tag);
  return tag;
}

function paintDelivery(tag) {
  const through = state.current?.inbox_picked_up_through;
  if (tag.dataset.state === 'queued' && through != null && Number(tag.dataset.id) <= through) {
    tag.dataset.state = 'picked up';
  }
  const s = tag.dataset.state;
  const offline = state.current && agentStatus(state.current) !== 'online';
  const text = s === 'queued' ? (offline ? 'queued: the agent is offline' : 'queued') : s;
  if (tag.textContent !== text) tag.textContent = text;
}

/** The agent spoke (row `id`): every message before it was answered. */
function answerPending(id) {
  for (const tag of state.pending) {
    if (Number(tag.dataset.id) > id) continue;
    tag.dataset.state = 'answered';
    paintDelivery(tag);
    state.pending.delete(tag);
  }
}

bus.addEventListener('tick', () => {
  refreshTimes();
  for (const tag of state.pending) {
    if (!tag.isConnected) state.pending.delete(tag);
    else if (tag.dataset.state === 'queued') paintDelivery(tag);
  }
});

/** A message's text, formatted (Markdown, sanitised). */
const textBlock = (text) => withCodeCopy(el('div', { class: 'text' }, renderMarkdown(text)), text);

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

/**
 * One message bubble: `side` is `out` (the operator), `in` (this
 * workspace's agent) or `other` (anyone else: a peer agent, a delegation).
 */
export function bubble(side, who, row, ...content) {
  // A text message has actions (msgactions.js): copy, quote.
  const actions = content[0]?.className === 'text' ? actionsButton() : null;
  return el('li', { class: `msg msg-${side}`, dataset: { id: row.id, type: row.activity_type } },
    el('div', { class: 'msg-head' }, el('span', { class: 'who' }, who), timeOf(row), actions),
    ...content);
}

/** A workspace's name (or "operator"), for "who asked whom". */
export function partyName(id) {
  if (!id) return 'unknown';
  if (id === 'operator') return 'operator';
  return state.workspaces.find((w) => w.id === id)?.name || id.slice(0, 8);
}

const DELEGATION_LABEL = { in_progress: 'in progress' };

/** The ledger status of delegation `did`, live: kept in `state.dchips`. */
function delegationChip(did, status) {
  const chip = el('span', { class: 'dchip' });
  paintChip(chip, status);
  if (!state.dchips.has(did)) state.dchips.set(did, new Set());
  state.dchips.get(did).add(chip);
  return chip;
}

function paintChip(chip, status) {
  chip.className = `dchip dchip-${status}`;
  chip.dataset.status = status;
  chip.textContent = DELEGATION_LABEL[status] || status;
}

/** The ledger said where delegation `did` stands: its chips follow. */
export function setDelegationStatus(did, status) {
  state.dstatus.set(did, status);
  for (const chip of state.dchips.get(did) || []) {
    if (!chip.isConnected) state.dchips.get(did).delete(chip);
    else if (chip.dataset.status !== status) paintChip(chip, status);
  }
}

/** The link to a delegation's row in the workspace's Delegations tab. */
function ledgerLink(did) {
  return el('a', { class: 'ledger-link', href: `#/w/${state.current?.id}/delegations/${did}` }, 'ledger row');
}

/** The Trace button of a row whose data carries a `traceparent`, else null. */
function traceOf(row, what) {
  const id = traceIdOf(row.data?.traceparent);
  return id ? traceButton(id, what) : null;
}

/** A task delegated to this workspace: who asked, its live status, the task. */
function delegateRow(row) {
  const data = row.data || {};
  const did = data.delegation_id;
  // The row's own status is where the task started; the ledger's is where it is.
  if (!state.dstatus.has(did)) state.dwanted.set(did, row.target_id);
  const li = el('li', { class: 'msg msg-other msg-delegation', dataset: { id: row.id, type: 'delegate', did } },
    el('div', { class: 'msg-head' },
      el('span', { class: 'who' }, `${partyName(row.source_id)} → ${partyName(row.target_id)} · delegation`),
      delegationChip(did, state.dstatus.get(did) || row.status || 'queued'),
      ledgerLink(did),
      traceOf(row, 'this delegation'),
      timeOf(row)),
    textBlock(data.task ?? row.summary ?? ''));
  return li;
}

/** The outcome of a delegation this workspace made: a system note. */
function resultRow(row) {
  const data = row.data || {};
  const did = data.delegation_id;
  const status = data.status || row.status;
  state.dstatus.set(did, status);
  const task = (row.summary || '').replace(/^delegation \w+: /, '');
  const outcome = data.error_detail || row.error_detail || data.result_preview || '';
  return el('li', { class: 'msg msg-note msg-result', dataset: { id: row.id, type: 'delegation_result', did } },
    timeOf(row), ' ',
    el('span', { class: 'who' }, `${partyName(row.target_id)} → ${partyName(row.source_id)} · delegation`), ' ',
    delegationChip(did, status), ' ',
    el('span', { class: 'dtask' }, task),
    outcome ? el('span', { class: 'doutcome' }, ` — ${outcome}`) : null, ' ',
    ledgerLink(did));
}

/** An attachment the agent sent: a file it uploaded to its chat, or a link when its URI is one the browser can open. */
function agentAttachment(a) {
  const staged = agentFileChip(a);
  if (staged) return staged;
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
function appendUpload(ctx, row, chip) {
  // Consecutive uploads share one bubble, as they were sent together.
  const last = ctx.upload;
  if (last && new Date(row.created_at) - new Date(last.dataset.at) < 60_000) {
    last.lastElementChild.append(chip);
    return;
  }
  const b = bubble('out', 'You', row, el('ul', { class: 'chips', 'aria-label': 'Attachments' }, chip));
  b.dataset.type = 'upload';
  b.dataset.at = row.created_at;
  ctx.parent.append(b);
  ctx.upload = b;
}

/** Whether a row is a file sent to the chat (drawn as a chip in an upload bubble). */
const isUpload = (row) => row?.activity_type === 'a2a_receive'
  && (row.method === 'chat_upload_receive' || row.method === 'chat_upload_forward');

/** Draws one row into `ctx.parent` (after the day separator it may need). */
function draw(ctx, row) {
  const data = row.data || {};
  separateDay(ctx, row);
  const upload = isUpload(row);
  if (!upload) ctx.upload = null;
  const agentName = state.current?.name || 'Agent';

  if (upload) {
    appendUpload(ctx, row, row.method === 'chat_upload_receive' ? uploadChip(data) : forwardedChip(data));
  } else if (row.activity_type === 'a2a_receive' && row.method === 'delegate') {
    ctx.parent.append(delegateRow(row));
  } else if (row.activity_type === 'a2a_receive' && row.method === 'delegation_result') {
    ctx.parent.append(resultRow(row));
  } else if (row.activity_type === 'a2a_receive' && (row.method === 'message/send' || !row.method)) {
    const mine = data.source === 'canvas_user';
    const who = mine ? 'You' : `${partyName(data.source_id || row.source_id)} → ${agentName}`;
    const files = (Array.isArray(data.parts) ? data.parts : []).filter((p) => p?.kind === 'file' && p.file);
    const b = bubble(mine ? 'out' : 'other', who, row, textBlock(data.text ?? row.summary ?? ''),
      files.length ? el('ul', { class: 'chips', 'aria-label': 'Attached files' },
        ...files.map((p) => el('li', { class: 'chip' }, el('span', { class: 'chip-name' }, p.file.name || 'file')))) : null);
    const trace = traceOf(row, 'this request');
    if (trace) b.firstElementChild.append(trace);
    if (row.status === 'forwarded') b.firstElementChild.append(deliveryTag(row, 'delivered'));
    else if (row.status === 'queued') b.firstElementChild.append(deliveryTag(row, row.id < state.lastAgentId ? 'answered' : 'queued'));
    ctx.parent.append(b);
    // A push workspace answers inline: its reply is stored on the same row.
    if (row.response_body) {
      const reply = textOfAnswer(row.response_body);
      if (reply) ctx.parent.append(bubble('in', agentName, row, textBlock(reply)));
    }
  } else if (row.activity_type === 'agent_message') {
    const attachments = Array.isArray(data.attachments) ? data.attachments : [];
    ctx.parent.append(bubble('in', agentName, row,
      textBlock(data.text ?? row.summary ?? ''),
      attachments.length
        ? el('ul', { class: 'chips', 'aria-label': 'Attachments from the agent' }, ...attachments.map(agentAttachment))
        : null));
  } else {
    // Anything else the agent reported: one quiet line.
    const text = [row.activity_type, row.method, row.summary, row.status, row.error_detail].filter(Boolean).join(' · ');
    ctx.parent.append(el('li', { class: 'msg msg-note', dataset: { id: row.id } }, timeOf(row), ' ', text));
  }
}

/** Forgets the open chat's rows (a new chat opens). */
export function resetRows() {
  state.rows = [];
  state.shownFrom = 0;
  state.tail = { parent: $('messages'), day: null, upload: null };
  state.rendered = new Set();
  state.relTimes = new Set();
  state.pending = new Set();
  state.dchips = new Map();
  state.dstatus = new Map();
  state.dwanted = new Map();
  state.ledgerRead = false;
  state.lastId = 0;
  state.lastAgentId = 0;
  state.historyBefore = null; // the oldest id fetched: the next older page ends there
  state.historyDone = false; // the conversation's first row is kept
  state.loadingOlder = null;
  $('messages').replaceChildren();
}

/** Keeps history rows (oldest first) without drawing them. */
export function keepRows(rows) {
  for (const row of rows) {
    if (state.rendered.has(row.id)) continue;
    state.rendered.add(row.id);
    state.rows.push(row);
    state.lastId = Math.max(state.lastId, row.id);
    if (row.activity_type === 'agent_message') state.lastAgentId = Math.max(state.lastAgentId, row.id);
  }
}

/** Keeps an older page of history (oldest first) before the kept rows, undrawn. */
export function keepOlderRows(rows) {
  const fresh = rows.filter((row) => !state.rendered.has(row.id));
  for (const row of fresh) state.rendered.add(row.id);
  state.rows = fresh.concat(state.rows);
  state.shownFrom += fresh.length;
}

/** Draws `rows` as one fragment in a fresh context. */
function drawBatch(rows) {
  const ctx = { parent: document.createDocumentFragment(), day: null, upload: null };
  for (const row of rows) draw(ctx, row);
  return ctx;
}

/**
 * Where a batch drawn from kept row `i` on may start: not inside a run of
 * uploads that share one bubble (appendUpload), which a cut there would
 * draw as two.
 */
function batchStart(i) {
  let at = i;
  while (at > 0 && isUpload(state.rows[at]) && isUpload(state.rows[at - 1])
    && Date.parse(state.rows[at].created_at) - Date.parse(state.rows[at - 1].created_at) < 60_000) at -= 1;
  return at;
}

/** Draws the newest `count` kept rows (a page), replacing what the log showed. */
export function showNewest(count = PAGE) {
  state.shownFrom = batchStart(Math.max(0, state.rows.length - count));
  const ctx = drawBatch(state.rows.slice(state.shownFrom));
  $('messages').replaceChildren(ctx.parent);
  state.tail = { parent: $('messages'), day: ctx.day, upload: ctx.upload };
}

/** Whether older rows than the ones drawn are kept. */
export const hasOlder = () => state.shownFrom > 0;

/**
 * Draws the page (or `count` rows) before the oldest drawn row above it,
 * keeping the rows the reader sees where they are. False when there was
 * none.
 */
export function showOlder(count = PAGE) {
  if (!hasOlder()) return false;
  const from = batchStart(Math.max(0, state.shownFrom - count));
  const ctx = drawBatch(state.rows.slice(from, state.shownFrom));
  // Laid out only as they scroll near (style.css).
  for (const li of ctx.parent.children) li.classList.add('far');
  state.shownFrom = from;
  const list = $('messages');
  // The drawn part began with its day's separator; the older page ends
  // with that day's rows when they share it, so the day is named once.
  const first = list.firstElementChild;
  if (first?.classList.contains('day') && first.dataset.day === ctx.day) first.remove();
  const log = $('log');
  const before = log.scrollHeight - log.scrollTop;
  list.prepend(ctx.parent);
  log.scrollTop = log.scrollHeight - before;
  return true;
}

/**
 * Adds one live row at the end of the log; false when it was already
 * there.
 */
export function renderRow(row) {
  if (state.rendered.has(row.id)) return false;
  keepRows([row]);
  const before = state.tail.parent.lastElementChild;
  draw(state.tail, row);
  // Only what arrives live fades in, not the history drawn on open.
  for (let n = before ? before.nextElementSibling : state.tail.parent.firstElementChild; n; n = n.nextElementSibling) {
    n.classList.add('arrived');
  }
  // The agent speaking proves it read its inbox up to here.
  if (row.activity_type === 'agent_message') answerPending(row.id);
  return true;
}
