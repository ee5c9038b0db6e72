/** Helpers for this package's tests (not exported from the package entry). */
import {
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TMPFS_MAGIC = 0x01021994;

/** True when `dir` accepts an O_DIRECT open of a file in it. */
export function supportsODirect(dir: string): boolean {
  const probe = mkdtempSync(join(dir, 'odirect-probe-'));
  try {
    const f = join(probe, 'f');
    writeFileSync(f, Buffer.alloc(4096));
    try {
      closeSync(openSync(f, constants.O_RDWR | constants.O_DIRECT));
      return true;
    } catch {
      return false;
    }
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/**
 * A temp directory on a real disk if there is one: os.tmpdir() may be a tmpfs, so /var/tmp
 * (disk-backed by convention) is preferred when os.tmpdir() is a tmpfs.
 */
export function diskTmpDir(): string {
  for (const d of [tmpdir(), '/var/tmp']) {
    try {
      if (statfsSync(d).type !== TMPFS_MAGIC) return d;
    } catch {
      // not there
    }
  }
  return tmpdir();
}

/** Every path under `root` (relative), recursively, sorted. */
export function walk(root: string): string[] {
  const out: string[] = [];
  const rec = (rel: string) => {
    for (const ent of readdirSync(join(root, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${ent.name}` : ent.name;
      out.push(p);
      if (ent.isDirectory()) rec(p);
    }
  };
  rec('');
  return out.sort();
}
