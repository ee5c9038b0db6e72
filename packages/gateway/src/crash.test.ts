/**
 * Crash points of the gateway's delete and upload, and of the gc that reclaims deleted files:
 * each runs over a `FaultyBlocker` that "kills the process" after its k-th change of blockerm
 * (every k in turn), its locks held by a process that then dies (a `sleep` child, killed). A fresh
 * process then finds every file either there and whole or gone, never a record naming a map whose
 * blocks went; and the next gc collects what is left, down to 0 unreferenced bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Blocker, FaultyBlocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { collectGarbage, GATEWAY_OWNED_PREFIX, Mapper, storeUsage } from '@archipelago/mapper';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The mapper's crash harness: a `sleep` child holds the crashed run's locks and dies at the crash.
import { asProcess, victim } from '../../mapper/src/__fixtures__/crash.js';
import { FileStore, Upload } from './store.js';

const BS = 4096;
const HOUR = 3_600_000;
const IDENTITY = 'gwcrash_1';
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const content = () => Buffer.concat([randomBytes(2 * BS), Buffer.alloc(BS), randomBytes(700)]);
const X = content();
const Y = content();
const Z = content();
/** What each file holds when it is there. */
const FILES: Record<string, Buffer> = { keep: X, twin: X, solo: Y, new: Z };

let root: string;
const store = () => join(root, 'store');
const saved = () => join(root, 'saved');

interface Proc {
  maps: Blocker;
  blocks: FileBlocker;
  mapper: Mapper;
  files: FileStore;
  close(): Promise<void>;
}

/** A process's view: blockers (blockerm wrapped by `wrap`), a mapper and the file store. */
function open(wrap: (b: Blocker) => Blocker = (b) => b): Proc {
  const rawMaps = new FileBlocker({ dir: join(store(), 'maps'), identity: IDENTITY, lockPollMs: 5 });
  const blocks = new FileBlocker({ dir: join(store(), 'blocks'), identity: IDENTITY, lockPollMs: 5 });
  const maps = wrap(rawMaps);
  const mapper = new Mapper({ blockerm: maps, blockerb: blocks, lockTimeoutMs: 500 });
  const files = new FileStore({ blockerm: maps, blockerb: blocks, mapper, blocksize: BS });
  return {
    maps,
    blocks,
    mapper,
    files,
    async close() {
      await mapper.close().catch(() => {});
      await rawMaps.close().catch(() => {});
      await blocks.close().catch(() => {});
    },
  };
}

async function upload(p: Proc, name: string, data: Buffer): Promise<void> {
  await p.files.upload(name, async () => {
    const up = new Upload(p.files);
    await up.push(data);
    const md5sum = await up.finish();
    return p.files.commit('t', 'c', name, {
      hashes: up.hashes,
      bytes: up.bytes,
      blocksize: BS,
      ...(md5sum ? { md5: md5sum } : {}),
      contentType: 'application/octet-stream',
      meta: {},
    });
  });
}

/** The file's bytes as the gateway serves them, or null when there is no such file. */
async function read(p: Proc, name: string): Promise<Buffer | null> {
  const rec = await p.files.getObject('t', 'c', name);
  if (!rec) return null;
  const parts: Buffer[] = [];
  const entries = await p.files.entries(rec);
  entries.forEach((_, i) => {
    parts.push(Buffer.alloc(Math.min(BS, rec.bytes - i * BS)));
  });
  await Promise.all(entries.map((e, i) => p.files.readBlockInto(e, 0, parts[i]!)));
  return Buffer.concat(parts);
}

/**
 * Runs `op` killed after each of its changes of blockerm in turn (from the saved store), and
 * checks what a fresh process finds: `must` files there and whole, the others whole or gone; then
 * a gc (later: the crashed run's holds have lapsed) leaves every file whole and nothing
 * unreferenced, no live map but the files', and no marker but of the files' maps.
 */
async function crashEverywhere(
  op: (p: Proc) => Promise<unknown>,
  must: string[],
  may: string[],
): Promise<number> {
  const count = async (): Promise<number> => {
    await restore();
    let faulty!: FaultyBlocker;
    const p = open((b) => {
      faulty = new FaultyBlocker(b);
      return faulty;
    });
    await op(p);
    await p.close();
    return faulty.changes.length;
  };
  const n = await count();
  for (let k = 1; k <= n; k++) {
    await restore();
    const v = await victim();
    let faulty!: FaultyBlocker;
    const p = open((b) => {
      faulty = new FaultyBlocker(asProcess(b, v.proc));
      faulty.crashAfter(k);
      return faulty;
    });
    await op(p).catch(() => {});
    const what = `crash after change ${k} (${faulty.changes[k - 1]})`;
    expect(faulty.crashed, what).toBe(true);
    await p.close();
    await v.kill();

    const q = open();
    try {
      await check(q, must, may, `${what}, before gc`);
      await collectGarbage({ blockerm: q.maps, blockerb: q.blocks, now: () => Date.now() + HOUR });
      const there = await check(q, must, may, `${what}, after gc`);
      const u = await storeUsage({ mapper: q.mapper, blockerb: q.blocks });
      expect(u.unreferencedBytes, what).toBe(0);
      const maps = new Set<string>();
      for (const f of there) maps.add((await q.files.getObject('t', 'c', f))!.map);
      expect((await q.mapper.list()).map((m) => m.name).sort(), what).toEqual([...maps].sort());
      const markers: string[] = [];
      for await (const o of q.maps.list(GATEWAY_OWNED_PREFIX))
        markers.push(o.slice(GATEWAY_OWNED_PREFIX.length));
      expect(markers.sort(), what).toEqual([...maps].sort());
    } finally {
      await q.close();
    }
  }
  return n;
}

/** Every file of `must` is there and whole; of `may`, whole or gone. Resolves the files there. */
async function check(p: Proc, must: string[], may: string[], what: string): Promise<string[]> {
  const there: string[] = [];
  for (const f of [...must, ...may]) {
    const got = await read(p, f);
    if (got === null) {
      expect(must, `${what}: ${f} is gone`).not.toContain(f);
      continue;
    }
    expect(md5(got), `${what}: ${f}`).toBe(md5(FILES[f]!));
    there.push(f);
  }
  return there;
}

async function restore(): Promise<void> {
  await rm(store(), { recursive: true, force: true });
  await cp(saved(), store(), { recursive: true });
}

beforeAll(async () => {
  const base = (await stat('/dev/shm').catch(() => null)) ? '/dev/shm' : tmpdir();
  root = await mkdtemp(join(base, 'archip-gw-crash-'));
});
afterAll(() => rm(root, { recursive: true, force: true }));

describe('gateway crash points', () => {
  it('delete, upload and the gc after a delete, killed after any change: files whole or gone, the rest collectable', {
    timeout: 120_000,
  }, async () => {
    {
      const p = open();
      await p.files.putContainer('t', 'c');
      await upload(p, 'keep', X);
      await upload(p, 'twin', X);
      await upload(p, 'solo', Y);
      await p.close();
    }
    await rm(saved(), { recursive: true, force: true });
    await cp(store(), saved(), { recursive: true });

    // A delete of the only file of its content, and of one of two files sharing theirs.
    const d1 = await crashEverywhere(
      (p) => p.files.deleteObject('t', 'c', 'solo'),
      ['keep', 'twin'],
      ['solo'],
    );
    await crashEverywhere((p) => p.files.deleteObject('t', 'c', 'twin'), ['keep', 'solo'], ['twin']);
    // An upload of new content (its blocks are stored first; the crash counts blockerm changes).
    const u = await crashEverywhere((p) => upload(p, 'new', Z), ['keep', 'twin', 'solo'], ['new']);
    // The gc that follows a delete: it removes the map and frees the blocks, killed anywhere.
    const g = await crashEverywhere(
      async (p) => {
        await p.files.deleteObject('t', 'c', 'solo');
        await collectGarbage({ blockerm: p.maps, blockerb: p.blocks, now: () => Date.now() + HOUR });
      },
      ['keep', 'twin'],
      ['solo'],
    );
    expect(d1).toBeGreaterThanOrEqual(1);
    expect(u).toBeGreaterThanOrEqual(5); // markers, the map, the record, locks
    expect(g).toBeGreaterThanOrEqual(5);
  });
});
