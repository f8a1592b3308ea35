// Kept thumbnails: a small copy (≤ 96 px, WebP or JPEG, a few KiB) of every
// image sent or seen in a chat, as a data: URL in this browser's
// localStorage, one key per file id. Once the agent acknowledges a file its
// bytes are gone from the server for good, so after a reload the chip shows
// this copy (another browser, which never had the file, shows none).
// Bounded: the newest KEEP_MAX thumbnails, at most KEEP_BYTES in all; the
// oldest go first. A full or refused storage only means no kept thumbnail.

const PREFIX = 'molecule.thumb.';
const INDEX_KEY = 'molecule.thumbs'; // [[file_id, length], …], oldest first
const KEEP_MAX = 200;
const KEEP_BYTES = 1024 * 1024;
const SIDE = 96; // px, the long side at most
const ONE_MAX = 16 * 1024; // a thumbnail larger than this is not kept

/** The kept thumbnail of `fileId` (a data: URL), or null. */
export function keptThumb(fileId) {
  try {
    const url = localStorage.getItem(PREFIX + fileId);
    return url && url.startsWith('data:image/') ? url : null;
  } catch {
    return null;
  }
}

function readIndex() {
  try {
    const index = JSON.parse(localStorage.getItem(INDEX_KEY) || '[]');
    return Array.isArray(index) ? index.filter((e) => Array.isArray(e) && typeof e[0] === 'string') : [];
  } catch {
    return [];
  }
}

/** Removes the oldest entry of `index` (in place) and its thumbnail. */
function evictOldest(index) {
  const [fileId] = index.shift();
  localStorage.removeItem(PREFIX + fileId);
}

/** Keeps `url` as `fileId`'s thumbnail, evicting the oldest past the bounds. */
export function keepThumb(fileId, url) {
  try {
    const index = readIndex().filter(([id]) => id !== fileId);
    index.push([fileId, url.length]);
    let total = index.reduce((sum, [, n]) => sum + (Number(n) || 0), 0);
    while (index.length > KEEP_MAX || (total > KEEP_BYTES && index.length > 1)) {
      total -= Number(index[0][1]) || 0;
      evictOldest(index);
    }
    // A full storage (other keys may fill it): give up a few of the
    // oldest thumbnails for room, then give up keeping this one.
    for (let tries = 0; ; tries += 1) {
      try {
        localStorage.setItem(PREFIX + fileId, url);
        localStorage.setItem(INDEX_KEY, JSON.stringify(index));
        return true;
      } catch {
        if (tries >= 10 || index.length <= 1) throw new Error('storage full');
        evictOldest(index);
      }
    }
  } catch {
    try {
      localStorage.removeItem(PREFIX + fileId);
    } catch {
      // storage refused altogether
    }
    return false;
  }
}

/** The image in `blob` drawn at most SIDE px on its long side, as a data: URL. */
async function drawSmall(blob) {
  const src = URL.createObjectURL(blob);
  try {
    const img = new Image();
    img.src = src;
    await img.decode();
    const w = img.naturalWidth;
    const h = img.naturalHeight;
    if (!w || !h) return null;
    const scale = Math.min(1, SIDE / Math.max(w, h));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(w * scale));
    canvas.height = Math.max(1, Math.round(h * scale));
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    let url = canvas.toDataURL('image/webp', 0.7);
    if (!url.startsWith('data:image/webp')) {
      // No WebP encoder in this browser: JPEG, on white (it has no alpha).
      ctx.globalCompositeOperation = 'destination-over';
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      url = canvas.toDataURL('image/jpeg', 0.7);
    }
    return url.length <= ONE_MAX ? url : null;
  } finally {
    URL.revokeObjectURL(src);
  }
}

/**
 * Makes and keeps the small thumbnail of an image's bytes; resolves to its
 * data: URL, or null when the image cannot be drawn or kept. Never throws.
 */
export async function keepThumbOf(fileId, blob) {
  try {
    const url = await drawSmall(blob);
    return url && keepThumb(fileId, url) ? url : null;
  } catch {
    return null;
  }
}
