// Chrome's trace of the canvas at scale (bench/canvas_scale.sh with
// CANVAS_TRACE=1): the page's start (a fresh load to one second after the
// workspace list settled) and a long chat's opening (after another chat,
// to half a second after its newest page is drawn), recorded with
// Playwright's `browser.startTracing` (the `devtools.timeline` categories)
// in a browser of its own, and read as the renderer's main-thread tasks:
// each task's wall time (`dur`) and its time on the CPU (`tdur`), so that
// the page's own work is told apart from a busy machine's.
//
// Each page under test is a `web/` folder served by route in place of the
// binary's (the HTML's preload marker replaced as src/http/canvas.rs does,
// the server's headers kept, its CSP among them), so that two pages are
// measured against the one seeded server, rounds alternating between them.

import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CATEGORIES = ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'toplevel', 'v8.execute',
  'disabled-by-default-v8.cpu_profiler', '__metadata'];
const LONG_MS = 50;

/** The `.js`/`.mjs` files under `dir`, as paths from it, sorted (as build.rs lists them). */
async function modules(dir, prefix = '') {
  const out = [];
  for (const e of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...await modules(dir, rel));
    else if (/\.m?js$/.test(e.name)) out.push(rel);
  }
  return out.sort();
}

/** Serves the page of the `web/` folder `web` in place of the binary's, in `context`. */
async function servePage(context, base, web) {
  const names = await modules(path.join(web, 'js'));
  const html = (await readFile(path.join(web, 'index.html'), 'utf8')).split(/(?<=\n)/).map((line) => {
    const text = line.trimStart();
    if (!text.startsWith('<!-- modulepreload:')) return line;
    const indent = line.slice(0, line.length - text.length);
    return names.filter((n) => n !== 'app.js').map((n) => `${indent}<link rel="modulepreload" href="/assets/js/${n}">\n`).join('');
  }).join('');
  await context.route((url) => url.origin === base && (url.pathname === '/' || url.pathname.startsWith('/assets/')), async (route) => {
    const p = new URL(route.request().url()).pathname;
    const response = await route.fetch();
    const body = p === '/' ? html : await readFile(path.join(web, p.slice('/assets/'.length))).catch(() => null);
    if (body === null) return route.fulfill({ response });
    const headers = { ...response.headers() };
    for (const h of ['content-length', 'etag', 'last-modified', 'content-encoding']) delete headers[h];
    return route.fulfill({ status: 200, headers, body });
  });
}

/** Complete events per thread from a trace: `X` as they are, `B`/`E` paired. */
function completeEvents(events) {
  const out = [];
  const open = new Map();
  for (const e of events) {
    const k = `${e.pid}:${e.tid}`;
    if (e.ph === 'X' && e.dur !== undefined) out.push(e);
    else if (e.ph === 'B') (open.get(k) ?? open.set(k, []).get(k)).push(e);
    else if (e.ph === 'E') {
      const b = open.get(k)?.pop();
      if (b) out.push({ ...b, ph: 'X', dur: e.ts - b.ts, tdur: e.tts !== undefined && b.tts !== undefined ? e.tts - b.tts : undefined });
    }
  }
  return out;
}

/** A short name for an event inside a task: what ran or what the engine did. */
function label(e) {
  const d = e.args?.data ?? e.args?.beginData ?? {};
  const where = d.url ? ` ${d.url.replace(/^.*\/assets\//, '')}` : '';
  const fn = d.functionName ? ` ${d.functionName}` : '';
  return `${e.name}${fn}${where}`.slice(0, 90);
}

/** Whether an event only wraps the work inside it (its own time is not what the task did). */
const WRAPPER = /^(RunTask|ThreadControllerImpl::RunTask|ThreadPool_RunTask|BlinkScheduler_PerformMicrotaskCheckpoint)$/;

/**
 * The top-level tasks of the renderers' main threads in a trace, each
 * with its wall and CPU time in ms and what it was made of: the events
 * inside it by their own CPU time (their time less their children's),
 * added up by name, the largest first.
 */
export function tasksOf(trace, base) {
  const events = trace.traceEvents ?? trace;
  const threads = new Map();
  for (const e of events) if (e.ph === 'M' && e.name === 'thread_name') threads.set(`${e.pid}:${e.tid}`, e.args.name);
  // The page's renderers (not those of the browser's own pages): the
  // processes of its frames, or those that parsed or ran its files.
  const pids = new Set();
  for (const e of events) {
    const d = e.args?.data ?? e.args?.beginData;
    if (!d) continue;
    for (const f of d.frames ?? []) if (f.url?.startsWith(base) && f.processId) pids.add(f.processId);
    if (e.name === 'FrameCommittedInBrowser' && d.url?.startsWith(base) && d.processId) pids.add(d.processId);
    if (/^(ParseHTML|EvaluateScript|v8\.compileModule|ResourceSendRequest)$/.test(e.name) && d.url?.startsWith(base)) pids.add(e.pid);
  }
  const byThread = new Map();
  for (const e of completeEvents(events)) {
    const k = `${e.pid}:${e.tid}`;
    if (threads.get(k) !== 'CrRendererMain' || !pids.has(e.pid)) continue;
    (byThread.get(k) ?? byThread.set(k, []).get(k)).push(e);
  }
  const tasks = [];
  for (const list of byThread.values()) {
    list.sort((a, b) => a.ts - b.ts || b.dur - a.dur);
    let task = null;
    let stack = []; // the open events inside the task, outermost first
    let own = null; // label -> own CPU time (µs) inside the task
    const close = (until) => {
      while (stack.length && (until === undefined || stack[stack.length - 1].end <= until)) {
        const done = stack.pop();
        if (!WRAPPER.test(done.e.name)) own.set(done.label, (own.get(done.label) || 0) + Math.max(0, done.cpu - done.inner));
        if (stack.length) stack[stack.length - 1].inner += done.cpu;
      }
    };
    const finish = () => {
      if (!task) return;
      close();
      task.parts = [...own].map(([name, cpu]) => ({ name, cpu: cpu / 1000 })).sort((a, b) => b.cpu - a.cpu);
    };
    for (const e of list) {
      if (task && e.ts < task.ts + task.dur) {
        close(e.ts);
        stack.push({ e, label: label(e), end: e.ts + e.dur, cpu: e.tdur ?? e.dur, inner: 0 });
        continue;
      }
      if (e.name !== 'RunTask' && e.name !== 'ThreadControllerImpl::RunTask') continue;
      finish();
      task = { pid: e.pid, ts: e.ts, dur: e.dur, wall: e.dur / 1000, cpu: (e.tdur ?? 0) / 1000, parts: [] };
      own = new Map();
      stack = [{ e, label: label(e), end: e.ts + e.dur, cpu: e.tdur ?? e.dur, inner: 0 }];
      tasks.push(task);
    }
    finish();
  }
  return withScripts(tasks, samplesOf(events));
}

/**
 * The V8 CPU profile's samples in a trace, each with its time and what
 * ran: the innermost function of the page's own code (a module of
 * /assets/) on the stack, or the innermost function if none is.
 * Weighted by the time to the next sample (at most 5 ms).
 */
function samplesOf(events) {
  const profiles = new Map();
  const raw = [];
  for (const e of events) {
    if (e.name === 'Profile' && e.args?.data) profiles.set(`${e.pid}:${e.id}`, { pid: e.pid, t: e.args.data.startTime, nodes: new Map() });
    if (e.name !== 'ProfileChunk') continue;
    const p = profiles.get(`${e.pid}:${e.id}`);
    const d = e.args?.data;
    if (!p || !d) continue;
    for (const n of d.cpuProfile?.nodes ?? []) p.nodes.set(n.id, n);
    const ids = d.cpuProfile?.samples ?? [];
    const deltas = d.timeDeltas ?? [];
    for (let i = 0; i < ids.length; i += 1) {
      p.t += deltas[i] || 0;
      raw.push({ p, ts: p.t, node: ids[i] });
    }
  }
  const names = new Map();
  const nameOf = (p, id) => {
    const key = `${p.pid}:${id}`;
    if (names.has(key)) return names.get(key);
    let n = p.nodes.get(id);
    const leaf = n?.callFrame;
    while (n && !/\/assets\//.test(n.callFrame?.url || '')) n = p.nodes.get(n.parent);
    const f = n?.callFrame ?? leaf ?? {};
    const file = (f.url || '').replace(/^.*\/assets\/js\//, '');
    const name = `${f.functionName || '(anonymous)'}${file ? ` ${file}:${(f.lineNumber ?? -1) + 1}` : ''}`;
    names.set(key, name);
    return name;
  };
  // Parents are known once every chunk is read.
  for (const chunk of profiles.values()) {
    for (const n of chunk.nodes.values()) for (const c of n.children ?? []) if (chunk.nodes.has(c)) chunk.nodes.get(c).parent = n.id;
  }
  raw.sort((a, b) => a.ts - b.ts);
  return raw.map((s, i) => ({ pid: s.p.pid, ts: s.ts, weight: Math.min(5000, (raw[i + 1]?.ts ?? s.ts) - s.ts), name: nameOf(s.p, s.node) }));
}

/** Adds to each task the JavaScript its samples were in (`js`: name -> ms, the largest first). */
function withScripts(tasks, samples) {
  const sorted = [...tasks].sort((a, b) => a.ts - b.ts);
  let i = 0;
  for (const s of samples) {
    while (i < sorted.length && sorted[i].ts + sorted[i].dur < s.ts) i += 1;
    const t = sorted[i];
    if (!t || s.ts < t.ts || t.pid !== s.pid) continue;
    t.scripts ??= new Map();
    t.scripts.set(s.name, (t.scripts.get(s.name) || 0) + s.weight / 1000);
  }
  for (const t of tasks) t.js = [...(t.scripts ?? [])].sort((a, b) => b[1] - a[1]);
  return tasks;
}

/**
 * Whether a task is the trace's own: the CPU profiler starting (V8's API
 * interrupt, most of the task's time), not the page's work.
 */
const profilerStart = (t) => t.parts.length > 0 && t.parts[0].name === 'V8.InvokeApiInterruptCallbacks' && t.parts[0].cpu >= t.cpu / 2;

/** The figures of one traced stretch: the longest task by wall and by CPU, and how many exceed 50 ms. */
function summary(all) {
  const tasks = all.filter((t) => !profilerStart(t));
  const byWall = tasks.reduce((m, t) => (t.wall > (m?.wall ?? -1) ? t : m), null);
  const byCpu = tasks.reduce((m, t) => (t.cpu > (m?.cpu ?? -1) ? t : m), null);
  return {
    wall: byWall?.wall ?? 0,
    cpu: byCpu?.cpu ?? 0,
    overWall: tasks.filter((t) => t.wall > LONG_MS).length,
    overCpu: tasks.filter((t) => t.cpu > LONG_MS).length,
    longestCpu: byCpu,
    longestWall: byWall,
  };
}

function spread(xs, unit = ' ms') {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return `${Math.round(mid)}${unit} (${Math.round(s[0])}–${Math.round(s[s.length - 1])})`;
}

function describe(t) {
  if (!t) return 'none';
  const parts = t.parts.slice(0, 6).map((p) => `${p.name} ${p.cpu.toFixed(1)}`).join('; ');
  const js = (t.js ?? []).slice(0, 6).map(([name, ms]) => `${name} ${ms.toFixed(1)}`).join('; ');
  return `${Math.round(t.cpu)} ms CPU / ${Math.round(t.wall)} ms wall; own CPU ms: ${parts}; JS sampled ms: ${js || 'none'}`;
}

/**
 * Traces `rounds` rounds of each page of `pages` ({ name, web }: `web` a
 * `web/` folder, or null for the binary's page), alternating their order,
 * and prints the figures. `longId`: the long chat's workspace; `otherId`:
 * another workspace, opened before it; `newest`: the long chat's newest
 * message's text.
 */
export async function traceScale({ base, token, chromiumPath, pages, rounds, longId, otherId, newest, log = console.log }) {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const figures = new Map(pages.map((p) => [p.name, { start: [], chat: [], again: [] }]));
  try {
    for (let r = 0; r < rounds; r += 1) {
      const order = r % 2 ? [...pages].reverse() : pages;
      for (const p of order) {
        const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
        try {
          await context.addInitScript((t) => {
            localStorage.setItem('molecule.adminToken', t);
            let busy = false;
            new MutationObserver(() => {
              const list = document.querySelector('#workspace-list');
              if (list?.hasAttribute('aria-busy')) busy = true;
              else if (busy && list?.querySelector('[data-ws]') && !window.settledAt) window.settledAt = performance.now();
            }).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['aria-busy'] });
          }, token);
          if (p.web) await servePage(context, base, p.web);
          const page = await context.newPage();
          const f = figures.get(p.name);
          // The page's start.
          await browser.startTracing(page, { categories: CATEGORIES });
          await page.goto(`${base}/#/`);
          await page.waitForFunction(() => window.settledAt, null, { timeout: 60_000 });
          await page.waitForTimeout(1000);
          f.start.push(summary(tasksOf(JSON.parse(await browser.stopTracing()), base)));
          log(`       trace ${p.name} round ${r + 1}: page's start: ${describe(f.start.at(-1).longestCpu)}`);
          if (f.start.at(-1).longestWall !== f.start.at(-1).longestCpu) log(`         the longest by wall clock: ${describe(f.start.at(-1).longestWall)}`);
          // The long chat's opening, after another chat; then once more.
          for (const key of ['chat', 'again']) {
            await page.evaluate((id) => { location.hash = `#/w/${id}`; }, otherId);
            await page.locator('#messages .msg-in', { hasText: newest }).waitFor({ state: 'detached' });
            await page.waitForTimeout(500);
            await browser.startTracing(page, { categories: CATEGORIES });
            await page.evaluate((id) => { location.hash = `#/w/${id}`; }, longId);
            await page.locator('#messages .msg-in', { hasText: newest }).waitFor();
            await page.waitForFunction(() => !document.getElementById('messages').hasAttribute('aria-busy'));
            await page.waitForTimeout(500);
            f[key].push(summary(tasksOf(JSON.parse(await browser.stopTracing()), base)));
            log(`       trace ${p.name} round ${r + 1}: chat's opening (${key}): ${describe(f[key].at(-1).longestCpu)}`);
            if (f[key].at(-1).longestWall !== f[key].at(-1).longestCpu) log(`         the longest by wall clock: ${describe(f[key].at(-1).longestWall)}`);
          }
        } finally {
          await context.close();
        }
      }
    }
  } finally {
    await browser.close();
  }
  const what = { start: "page's start", chat: "chat's first opening", again: "chat's opening again" };
  for (const [name, f] of figures) {
    for (const key of ['start', 'chat', 'again']) {
      const s = f[key];
      log(`       trace ${name}: ${what[key]}: longest task on the CPU ${spread(s.map((x) => x.cpu))}, wall clock ${spread(s.map((x) => x.wall))}; `
        + `tasks > ${LONG_MS} ms on the CPU ${spread(s.map((x) => x.overCpu), '')}, wall ${spread(s.map((x) => x.overWall), '')} (${s.length} rounds)`);
      const worst = s.reduce((m, x) => (x.cpu > (m?.cpu ?? -1) ? x : m), null);
      log(`       trace ${name}: ${what[key]}: the longest on the CPU of all rounds: ${describe(worst?.longestCpu)}`);
    }
  }
}
