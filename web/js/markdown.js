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

import { Marked } from './vendor/marked.esm.js';
import DOMPurify from './vendor/purify.es.mjs';

const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const marked = new Marked({
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

const PURIFY = {
  ALLOWED_TAGS: ['p', 'br', 'strong', 'em', 'del', 'code', 'pre', 'ul', 'ol', 'li', 'a', 'blockquote', 'hr',
    'table', 'thead', 'tbody', 'tr', 'th', 'td'],
  ALLOWED_ATTR: ['href', 'start', 'align'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};

// Parsed once (passed to every sanitize call, the config is parsed anew
// each time: a long conversation's most repeated cost).
DOMPurify.setConfig(PURIFY);

// Every link opens in a new tab without handing the page to it.
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

/**
 * Text that Markdown would only wrap in one paragraph: none of its
 * characters, no autolink, nothing at a line's start that opens a block
 * (list, heading underline, indented code), no blank line, no space at a
 * line break. Most chat lines are such text: they skip both libraries.
 */
const MARKUP = /[\\`*_[\]<>#~|&@\r]|:\/\/|www\.|(^|\n)\s*([-+=]|\d+[.)])|(^|\n)[ \t]| \n|\n /i;
const plain = (text) => !MARKUP.test(text) && !/\n\s*\n/.test(text);

/** A message's text as a fragment of block elements. */
export function renderMarkdown(text) {
  const trimmed = String(text).trim();
  if (trimmed && plain(trimmed)) {
    const frag = document.createDocumentFragment();
    const p = document.createElement('p');
    p.textContent = trimmed;
    frag.append(p);
    return frag;
  }
  const frag = DOMPurify.sanitize(marked.parse(String(text)));
  // The newlines between blocks are the parser's layout, not the message's.
  for (const node of [...frag.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.data.trim()) node.remove();
  }
  return frag;
}
