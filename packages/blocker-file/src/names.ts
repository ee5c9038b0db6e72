import { createHash } from 'node:crypto';
import { join } from 'node:path';

export { isValidObjectName, MAX_NAME_LENGTH } from '@archipelago/blocker';

/**
 * Temporary files (writeFull, copy, lock acquisition, the O_DIRECT probe) carry a `~` in their
 * name, which no valid object name can contain (the contract's name rule, @archipelago/blocker),
 * so they never collide with objects and list() skips them.
 */
export const TEMP_MARK = '~';

/** The three directory levels for `name`: lowercase hex of the first 3 bytes of SHA-256(name). */
export function hashDirs(name: string): [string, string, string] {
  const h = createHash('sha256').update(name).digest('hex');
  return [h.slice(0, 2), h.slice(2, 4), h.slice(4, 6)];
}

/** Recently computed paths: every I/O needs one, and a SHA-256 plus joins per call shows up. */
const PATH_CACHE_MAX = 8192;
/**
 * Per directory, name -> path. Keyed by the name itself (no `dir + name` string built per call:
 * the names come from map entries, the same string each time, whose hash V8 keeps).
 */
const pathCache = new Map<string, Map<string, string>>();

/** `<dir>/h0h1/h2h3/h4h5/<name>` (reference §4.3). The name must already be valid. */
export function hashedPath(dir: string, name: string): string {
  let paths = pathCache.get(dir);
  if (paths === undefined) {
    paths = new Map();
    pathCache.set(dir, paths);
  }
  let path = paths.get(name);
  if (path === undefined) {
    const [a, b, c] = hashDirs(name);
    path = join(dir, a, b, c, name);
    if (paths.size >= PATH_CACHE_MAX) paths.delete(paths.keys().next().value as string);
    paths.set(name, path);
  }
  return path;
}
