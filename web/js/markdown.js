// Messages as Markdown: CommonMark plus GitHub's extensions (tables,
// strikethrough, bare http(s) links) through the vendored `marked` parser,
// then through the vendored DOMPurify sanitiser, into DOM nodes. CommonMark's
// own rules decide emphasis, so `user_id` and `snake_case_name` stay as
// written (`*` is another matter: CommonMark lets it emphasise inside a
// word, so `2*3*4` has an italic 3, as on GitHub; `2 * 3 * 4` does not).
//
// What a message cannot do: inject markup (raw HTML in it is shown as the
// text it is, and whatever HTML the parser makes is sanitised against a
// short list of tags), link anywhere but http(s) and mailto (no
// `javascript:` or `data:` URLs), load images from elsewhere (an image is
// shown as its link), or add headings to the page's outline (a heading is
// a bold paragraph). Neither library evaluates code, so the strict CSP
// stays as it is (see web/js/vendor/README.md).
//
// The two libraries are loaded after the page's own modules (a dynamic
// import, fetched early through its preload link), so that their start-up
// (marked builds its grammar, DOMPurify its tables) is a task of its own,
// not part of the page's first. Until they are in, a message that needs
// them is drawn as its plain text and redrawn in place once they arrive;
// the chat waits for them before drawing its history (`markdownReady`).

import { whenIdle } from './dom.js';

const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A Marked parser with the page's renderer (raw HTML as text, no headings or images). */
function makeParser(Marked) {
  return new Marked({
    gfm: true,
    renderer: {
      // Raw HTML in a message is text, not markup.
      html({ text }) {
        return escapeHtml(text);
      },
      // A code block verbatim, without the newline the default adds.
      code({ text }) {
        return `<pre><code>${escapeHtml(text)}</code></pre>`;
      },
      // Headings would enter the page's outline: a bold paragraph instead.
      heading({ tokens }) {
        return `<p><strong>${this.parser.parseInline(tokens)}</strong></p>\n`;
      },
      // An image would be fetched from wherever it points: its link instead.
      image({ href, text }) {
        return `<a href="${escapeHtml(href || '')}">${escapeHtml(text || href || '')}</a>`;
      },
    },
  });
}

const PURIFY = {
  ALLOWED_TAGS: ['p', 'br', 'strong', 'em', 'del', 'code', 'pre', 'ul', 'ol', 'li', 'a', 'blockquote', 'hr',
    'table', 'thead', 'tbody', 'tr', 'th', 'td'],
  ALLOWED_ATTR: ['href', 'start', 'align'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};

/** The libraries once loaded: `{ marked, DOMPurify }`. */
let libs = null;
/** Placeholders drawn before the libraries came (paragraph -> text), redrawn when they do. */
const waiting = new Map();

const loading = Promise.all([import('./vendor/marked.esm.js'), import('./vendor/purify.es.mjs')])
  .then(([{ Marked }, { default: DOMPurify }]) => {
    // Parsed once (passed to every sanitize call, the config is parsed
    // anew each time: a long conversation's most repeated cost).
    DOMPurify.setConfig(PURIFY);
    // Every link opens in a new tab without handing the page to it.
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A' && node.hasAttribute('href')) {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer');
      }
    });
    libs = { marked: makeParser(Marked), DOMPurify };
    for (const [p, text] of waiting) p.replaceWith(renderMarkdown(text));
    waiting.clear();
    warmUp();
  });

/**
 * Their first use compiles their code and regular expressions: the first
 * messages drawn with them took 100 ms and more on a busy machine, in the
 * chat's opening; a first sample of every kind at once still made one task
 * of 93 ms. Small samples go through them while the page is idle instead,
 * one per task, the smallest first, each compiling a little more of them.
 */
const SAMPLES = [
  '*a*',
  '**b** and `c`',
  'snake_case, 2 * 3 and ~~d~~',
  '- e\n- f',
  '1. g\n2. h',
  '[i](https://example.com/i)',
  'https://example.com/j and <b>k</b> &amp;',
  '> l',
  '```\nm\n```',
  '| n | o |\n|---|---|\n| p | q |',
];
function warmUp() {
  for (const sample of SAMPLES) whenIdle(() => renderMarkdown(sample));
}

/** Resolves once Markdown is drawn as Markdown (the libraries are in). */
export const markdownReady = () => loading;

/**
 * Text that Markdown would only wrap in one paragraph: none of its
 * characters, no autolink, nothing at a line's start that opens a block
 * (list, heading underline, indented code), no blank line, no space at a
 * line break. Most chat lines are such text: they skip both libraries.
 */
const MARKUP = /[\\`*_[\]<>#~|&@\r]|:\/\/|www\.|(^|\n)\s*([-+=]|\d+[.)])|(^|\n)[ \t]| \n|\n /i;
const plain = (text) => !MARKUP.test(text) && !/\n\s*\n/.test(text);

/** One paragraph of `text`, as it is. */
function paragraph(text) {
  const frag = document.createDocumentFragment();
  const p = document.createElement('p');
  p.textContent = text;
  frag.append(p);
  return frag;
}

/** A message's text as a fragment of block elements. */
export function renderMarkdown(text) {
  const trimmed = String(text).trim();
  if (trimmed && plain(trimmed)) return paragraph(trimmed);
  if (!libs) {
    // As written for now; redrawn in place when the libraries are in.
    const frag = paragraph(String(text));
    waiting.set(frag.firstChild, String(text));
    return frag;
  }
  const frag = libs.DOMPurify.sanitize(libs.marked.parse(String(text)));
  // The newlines between blocks are the parser's layout, not the message's.
  for (const node of [...frag.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.data.trim()) node.remove();
  }
  return frag;
}
