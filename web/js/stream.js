// The event stream: GET /workspaces/:id/events read with fetch() (EventSource
// cannot send an Authorization header) and parsed here, reconnecting with
// exponential backoff and resuming after the last activity id rendered.

import { errorOf, unauthorized, wsPath } from './api.js';
import { sleep } from './dom.js';
import { state } from './state.js';

const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

/**
 * Follows the workspace's events until `signal` aborts. Callbacks:
 * `onEvent({event, data, id})` per event, `onLive(text, cls)` for the
 * connection's own state, `onOpen(first)` after each (re)connect,
 * `onGone()` when the workspace no longer exists.
 */
export async function followEvents(wsId, signal, { onEvent, onLive, onOpen, onGone }) {
  let backoff = BACKOFF_MIN_MS;
  let first = true;
  while (!signal.aborted) {
    try {
      const res = await fetch(wsPath(wsId, `/events?since_id=${state.lastId}`), {
        headers: { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' },
        cache: 'no-store',
        signal,
      });
      if (res.status === 401) {
        unauthorized();
        return;
      }
      if (!res.ok) throw await errorOf(res);
      onLive('live', 'ok');
      backoff = BACKOFF_MIN_MS;
      onOpen(first);
      first = false;
      await readEventStream(res.body, signal, onEvent);
    } catch (e) {
      if (signal.aborted) return;
      if (e.status === 404) {
        onGone();
        return;
      }
    }
    if (signal.aborted) return;
    onLive(`reconnecting in ${Math.round(backoff / 1000)} s…`, 'warn');
    // Jitter keeps many tabs from reconnecting in lockstep after a restart.
    await sleep(backoff + Math.random() * 300, signal);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
}

/** Parses a text/event-stream body, calling onEvent({event, data, id}). */
export async function readEventStream(body, signal, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buffer = '';
  let event = { event: 'message', data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // Lines end in LF, CRLF or CR; a CR at the very end may be half of a
    // CRLF split across chunks, so it waits for the next chunk.
    let m;
    while ((m = /\r\n|\n|\r(?!$)/.exec(buffer)) !== null) {
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (line === '') {
        if (event.data.length) onEvent({ event: event.event, data: event.data.join('\n'), id: event.id });
        event = { event: 'message', data: [], id: null };
        continue;
      }
      if (line.startsWith(':')) continue; // a comment: the keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') event.event = val;
      else if (field === 'data') event.data.push(val);
      else if (field === 'id') event.id = val;
    }
  }
}
