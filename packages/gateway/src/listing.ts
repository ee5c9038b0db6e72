/** Swift listings (of an account's containers, of a container's objects): pages and formats. */
import type * as http from 'node:http';
import { HttpError, wantsJson } from './http.js';

/** Most rows in one listing answer (Swift's default and maximum `limit`). */
const LISTING_LIMIT = 10_000;

/** Listing pagination: marker, end_marker, limit (Swift). */
function page<T>(rows: T[], q: URLSearchParams, key: (r: T) => string): T[] {
  const marker = q.get('marker');
  const endMarker = q.get('end_marker');
  const limitS = q.get('limit');
  let limit = LISTING_LIMIT;
  if (limitS !== null) {
    limit = Number(limitS);
    if (!Number.isSafeInteger(limit) || limit < 0) throw new HttpError(400, 'bad limit');
    limit = Math.min(limit, LISTING_LIMIT);
  }
  const out: T[] = [];
  for (const r of rows) {
    const k = key(r);
    if (marker !== null && k <= marker) continue;
    if (endMarker !== null && k >= endMarker) break;
    if (out.length >= limit) break;
    out.push(r);
  }
  return out;
}

/**
 * Answers a listing of `all` (sorted by `name`), one page of it (`marker`, `end_marker`, `limit`
 * in `query`): JSON (`?format=json` or `Accept: application/json`; `json(row)` each) or plain
 * text (one name a line; 204 when empty), with `headers`.
 */
export function sendListing<T>(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  query: URLSearchParams,
  headers: Record<string, string>,
  all: T[],
  name: (r: T) => string,
  json: (r: T) => unknown,
): void {
  const rows = page(all, query, name);
  const format = query.get('format') ?? (wantsJson(req) ? 'json' : 'plain');
  if (format === 'json') {
    const body = JSON.stringify(rows.map(json));
    res.writeHead(200, {
      ...headers,
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
    return;
  }
  if (format !== 'plain' && format !== 'text') throw new HttpError(400, `format ${format} is not supported`);
  if (rows.length === 0) {
    res.writeHead(204, headers);
    res.end();
    return;
  }
  const body = rows.map((r) => `${name(r)}\n`).join('');
  res.writeHead(200, {
    ...headers,
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}
