/** Test helpers: a mapper over two file blockers, and I/O through it as the composer does it. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Blocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, beforeEach } from 'vitest';
import type { MapperApi } from '../api.js';
import { Mapper } from '../mapper.js';

/** A mapper with identity `identity` over `<dir>/maps` and `<dir>/blocks`. */
export function stack(dir: string, identity: string, lockTimeoutMs = 500) {
  const m = new FileBlocker({ dir: join(dir, 'maps'), identity });
  const b = new FileBlocker({ dir: join(dir, 'blocks'), identity });
  return { m, b, mapper: new Mapper({ blockerm: m, blockerb: b, lockTimeoutMs }) };
}

export interface TempStack {
  dir: string;
  maps: FileBlocker;
  blocks: FileBlocker;
  mapper: Mapper;
}

/**
 * Gives every test of the file a fresh stack (identity `identity`) in a new temporary directory,
 * handed to `use` before the test; closes it and removes the directory after the test.
 */
export function useTempStack(prefix: string, identity: string, use: (s: TempStack) => void): void {
  let s: TempStack | undefined;
  beforeEach(async () => {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    const { m, b, mapper } = stack(dir, identity);
    s = { dir, maps: m, blocks: b, mapper };
    use(s);
  });
  afterEach(async () => {
    if (!s) return;
    await s.mapper.close();
    await s.maps.close();
    await s.blocks.close();
    await rm(s.dir, { recursive: true, force: true });
    s = undefined;
  });
}

/** The ArchipelagoError code `p` rejects with, or 'no error'. */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) return e.code;
    throw e;
  }
  return 'no error';
}

/** Writes `data` at `offset` of volume `vol` through the mapper and the data blocker. */
export async function put(
  m: MapperApi,
  b: Blocker,
  vol: string,
  offset: number,
  data: Buffer,
): Promise<void> {
  let pos = 0;
  for (const s of await m.mapWrite(vol, offset, data.length)) {
    await b.write(s.target, s.offset, data.subarray(pos, pos + s.size));
    pos += s.size;
  }
}

/** Reads `length` bytes at `offset` of volume `vol` through the mapper and the data blocker. */
export async function get(
  m: MapperApi,
  b: Blocker,
  vol: string,
  offset: number,
  length: number,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const s of await m.mapRead(vol, offset, length)) {
    parts.push(s.zero ? Buffer.alloc(s.size) : await b.read(s.target, s.offset, s.size, { missingOk: true }));
  }
  return Buffer.concat(parts);
}
