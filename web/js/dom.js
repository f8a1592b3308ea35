// Small DOM and formatting helpers shared by every part of the page, and
// the queue of work that waits for an idle moment. No imports: anything
// may use them.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** Small element builder: el('p', {class: 'x'}, 'text', child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** 1536 -> "1.5 KiB". */
export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

/** Resolves in a task of its own, soon: lets the page draw and answer input in between. */
export const nextTask = () => (globalThis.scheduler?.yield
  ? globalThis.scheduler.yield()
  : new Promise((resolve) => { setTimeout(resolve, 0); }));

/** Work that waits for the page to be idle, run one piece per idle callback. */
const idleWork = [];
function nextIdle() {
  const idle = globalThis.requestIdleCallback || ((f) => setTimeout(f, 50));
  idle(() => {
    try {
      idleWork.shift()();
    } finally {
      if (idleWork.length) nextIdle();
    }
  });
}

/**
 * Runs `job` when the page is idle, after the jobs queued before it, each
 * in a task of its own (a warm-up that would be a long task in one piece
 * is queued as several small ones).
 */
export function whenIdle(job) {
  idleWork.push(job);
  if (idleWork.length === 1) nextIdle();
}

/**
 * A formatter (`make()`: an `Intl` one) made on its first use: the first
 * `Intl` formatter the page makes loads the locale's data, a long task on a
 * busy machine that need not be part of the page's start. With `warm`, it
 * is made when the page is first idle (a task of its own), so that the
 * first chat or list drawn with it does not pay for it.
 */
export function lazyFormat(make, { warm = false } = {}) {
  let made = null;
  if (warm) whenIdle(() => { made ??= make(); });
  return { format: (x) => (made ??= make()).format(x) };
}

// The locale's data in small pieces, before the first formatter needs it:
// its numbers, then its calendar, then the time zone's rules.
whenIdle(() => new Intl.NumberFormat().format(1));
whenIdle(() => new Intl.DateTimeFormat([], { year: 'numeric' }).format(0));
whenIdle(() => new Intl.DateTimeFormat([], { hour: 'numeric', minute: 'numeric' }).format(0));

/** A date formatter in the reader's locale, made when the page is first idle or on its first use. */
export const dateFormat = (options) => lazyFormat(() => new Intl.DateTimeFormat([], options), { warm: true });

/** An ISO time as "42 s ago", "3 min ago", … as of `now` (ms). */
export function ago(iso, now = Date.now()) {
  if (!iso) return '';
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Waits `ms`, or less if `signal` aborts first. */
export const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => {
    clearTimeout(t);
    resolve();
  }, { once: true });
});
