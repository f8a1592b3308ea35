// The API client: fetch() with the admin token, JSON in and out, and one
// error type carrying the server's own sentence. Everything it talks to is
// the API of shared/API.md on this same origin.

import { bus, state } from './state.js';

/** An API failure, with the server's own sentence when it sent one. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const NETWORK_DOWN = 'Cannot reach the server. Check that it is running and that you are online.';

/** Tells the page that the token stopped working; it signs out. */
export function unauthorized(message = 'That token was refused. Sign in again.') {
  bus.dispatchEvent(new CustomEvent('unauthorized', { detail: message }));
}

/** Reads `{"error": …}` from a failed response, else describes the status. */
export async function errorOf(res) {
  let message = '';
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON (a proxy's page, a cut connection): fall back to the status.
  }
  return new ApiError(res.status, message || `The server answered ${res.status} ${res.statusText}.`.trim());
}

/**
 * fetch() with the token; JSON in and out; throws ApiError. With
 * `withHeaders`, answers `{ body, headers }` (a listing's X-Total-Count).
 */
export async function api(path, { method = 'GET', body, signal, token = state.token, withHeaders = false } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, NETWORK_DOWN);
  }
  if (state.skewMs === null) {
    const date = Date.parse(res.headers.get('Date') || '');
    if (Number.isFinite(date)) state.skewMs = date - Date.now();
  }
  if (!res.ok) {
    const err = await errorOf(res);
    // A token that stops working mid-session (rotated, server restarted
    // with another one) sends the operator back to the sign-in form.
    if (res.status === 401 && token === state.token && state.token) unauthorized();
    throw err;
  }
  if (res.status === 204) return withHeaders ? { body: null, headers: res.headers } : null;
  return withHeaders ? { body: await res.json(), headers: res.headers } : res.json();
}

/** `/workspaces/<id><rest>`, the id escaped. */
export const wsPath = (id, rest = '') => `/workspaces/${encodeURIComponent(id)}${rest}`;
