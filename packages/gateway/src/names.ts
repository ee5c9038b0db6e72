/**
 * Names of accounts, containers and objects, and where their metadata lives in blockerm.
 *
 * User-chosen names never reach a file system path or a blocker name: index objects are named
 * by SHA-256 digests of the names, so no name can escape the store or collide with a map.
 */
import { createHash } from 'node:crypto';

export class NameError extends Error {}

const ACCOUNT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Swift's limits: container names up to 256 bytes, object names up to 1024 bytes. */
export const MAX_CONTAINER_BYTES = 256;
export const MAX_OBJECT_BYTES = 1024;

export function checkAccount(a: string): string {
  if (!ACCOUNT.test(a)) throw new NameError(`bad account name ${JSON.stringify(a.slice(0, 80))}`);
  return a;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkText(s: string, what: string, max: number): string {
  if (s.length === 0) throw new NameError(`empty ${what} name`);
  if (Buffer.byteLength(s) > max) throw new NameError(`${what} name longer than ${max} bytes`);
  // Control characters (NUL included) and lone surrogates are refused.
  if (/[\u0000-\u001f\u007f]/.test(s)) throw new NameError(`${what} name has control characters`);
  if (LONE_SURROGATE.test(s)) throw new NameError(`${what} name is not valid UTF-8`);
  return s;
}

export function checkContainer(c: string): string {
  checkText(c, 'container', MAX_CONTAINER_BYTES);
  if (c.includes('/')) throw new NameError('container name has a "/"');
  if (c === '.' || c === '..') throw new NameError('container name "." or ".." is refused');
  return c;
}

export function checkObject(o: string): string {
  checkText(o, 'object', MAX_OBJECT_BYTES);
  // Names are opaque keys (never paths), but "." and ".." segments are refused so no client can
  // be tricked into treating a name as a path that leaves its container.
  if (o.split('/').some((seg) => seg === '.' || seg === '..')) {
    throw new NameError('object name has a "." or ".." segment');
  }
  return o;
}

const h = (parts: string[], hexChars: number) =>
  createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, hexChars);

/** Prefix of every gateway index object in blockerm. */
export const INDEX_PREFIX = 'gw';

/** Container record: `gwc.<h(account)>.<h(account, container)>`. */
export function containerKey(account: string, container: string): string {
  return `gwc.${h([account], 32)}.${h([account, container], 32)}`;
}

/** Prefix of the container records of an account. */
export function containerPrefix(account: string): string {
  return `gwc.${h([account], 32)}.`;
}

/** Object record: `gwo.<h(account, container)>.<h(account, container, object)>` (101 characters). */
export function objectKey(account: string, container: string, object: string): string {
  return `gwo.${h([account, container], 32)}.${h([account, container, object], 64)}`;
}

/** Prefix of the object records of a container. */
export function objectPrefix(account: string, container: string): string {
  return `gwo.${h([account, container], 32)}.`;
}
