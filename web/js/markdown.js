// A safe subset of Markdown for messages: emphasis, inline code, fenced
// code blocks, bullet and numbered lists, paragraphs, and clickable http(s)
// links. Every piece is built as DOM nodes with text content, never parsed
// as HTML, so a message cannot inject markup or script (and the strict CSP
// stays as it is).

import { el } from './dom.js';

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s][^*\n]*\*|_[^_\s][^_\n]*_)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

/** Inline formatting of one run of text, as nodes. */
function inline(text) {
  const out = [];
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > at) out.push(text.slice(at, m.index));
    const [whole, code, strong, em, url] = m;
    if (code) out.push(el('code', {}, code.slice(1, -1)));
    else if (strong) out.push(el('strong', {}, ...inline(strong.slice(2, -2))));
    else if (em) out.push(el('em', {}, ...inline(em.slice(1, -1))));
    else if (url) out.push(el('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url));
    at = m.index + whole.length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

/** A message's text as a fragment of block elements. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text).split('\n');
  let para = [];
  let list = null;
  const flushPara = () => {
    if (!para.length) return;
    frag.append(el('p', {}, ...inline(para.join('\n'))));
    para = [];
  };
  const flushList = () => {
    if (list) frag.append(list);
    list = null;
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (/^```/.test(line)) {
      flushPara();
      flushList();
      const code = [];
      for (i += 1; i < lines.length && !/^```/.test(lines[i]); i += 1) code.push(lines[i]);
      frag.append(el('pre', {}, el('code', {}, code.join('\n'))));
      continue;
    }
    const bullet = /^\s*[-*] +(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)] +(.*)$/.exec(line);
    if (bullet || numbered) {
      flushPara();
      const tag = bullet ? 'ul' : 'ol';
      if (list && list.tagName.toLowerCase() !== tag) flushList();
      if (!list) list = el(tag);
      list.append(el('li', {}, ...inline((bullet || numbered)[1])));
      continue;
    }
    flushList();
    if (line.trim() === '') flushPara();
    else para.push(line);
  }
  flushPara();
  flushList();
  return frag;
}
