/**
 * Reclaiming deleted files (issue 17): a gateway on two file blockers, driven over HTTP, and
 * `collectGarbage` (what `vlmc gc` runs) next to it. A deleted file's blocks go at the next gc
 * unless another file, a `vlmc hash` image or a clone names them; uploads and deletes racing gc
 * never lose a byte of a file that is there.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import {
  collectGarbage,
  GATEWAY_OWNED_PREFIX,
  type GcOptions,
  listGcHolds,
  Mapper,
  storeUsage,
} from '@archipelago/mapper';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Gateway } from './context.js';
import { startGateway } from './server.js';

const BS = 4096;
const HOUR = 3_600_000;
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
/** 3 full blocks, a zero block and a partial one. */
/**
 * 3 random blocks, a zero block, and 1000 random bytes whose last is not zero: a block is stored
 * without its trailing zeros, and the tests count the tail's 1000 bytes (a random last byte was 0
 * once in 256 runs, and a bound below came out one byte short).
 */
const content = () => {
  const tail = randomBytes(1000);
  tail[999]! |= 1;
  return Buffer.concat([randomBytes(3 * BS), Buffer.alloc(BS), tail]);
};

let dir: string;
let maps: FileBlocker;
let blocks: FileBlocker;
let mapper: Mapper;
let gw: Gateway;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-gw-gc-'));
  maps = new FileBlocker({ dir: join(dir, 'maps'), identity: 'gwgc_1' });
  blocks = new FileBlocker({ dir: join(dir, 'blocks'), identity: 'gwgc_1' });
  mapper = new Mapper({ blockerm: maps, blockerb: blocks });
  gw = await startGateway({ blockerm: maps, blockerb: blocks, mapper, blocksize: BS, auth: false });
  expect((await fetch(`${gw.url}/t/c`, { method: 'PUT' })).status).toBe(201);
});

afterEach(async () => {
  await gw.close();
  await mapper.close();
  await maps.close();
  await blocks.close();
  await rm(dir, { recursive: true, force: true });
});

const url = (name: string) => `${gw.url}/t/c/${name}`;
async function upload(name: string, data: Buffer): Promise<string> {
  const r = await fetch(url(name), { method: 'PUT', body: data });
  expect(r.status, await r.clone().text()).toBe(201);
  return r.headers.get('x-archipelago-map')!;
}
async function remove(name: string): Promise<void> {
  expect((await fetch(url(name), { method: 'DELETE' })).status).toBe(204);
}
/** The file's bytes as a client downloads them, and the ETag it checks them against. */
async function download(name: string): Promise<{ status: number; body: Buffer; etag: string | null }> {
  const r = await fetch(url(name));
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()), etag: r.headers.get('etag') };
}
async function expectFile(name: string, data: Buffer): Promise<void> {
  const got = await download(name);
  expect(got.status, name).toBe(200);
  expect(md5(got.body), name).toBe(md5(data));
  expect(got.etag, name).toBe(md5(data));
}
/** What `vlmc gc` runs (default grace: 10 minutes). */
const gc = (o: Partial<GcOptions> = {}) => collectGarbage({ blockerm: maps, blockerb: blocks, ...o });
/** What `vlmc du` shows: the store's use, and what a gc would free. */
async function du() {
  const u = await storeUsage({ mapper, blockerb: blocks, blockerm: maps });
  const dry = await gc({ dryRun: true });
  return { ...u, reclaimableObjects: dry.reclaimableObjects, reclaimableBytes: dry.reclaimableBytes };
}
const objects = async (b: FileBlocker, prefix = '') => {
  const out: string[] = [];
  for await (const n of b.list(prefix)) out.push(n);
  return out.sort();
};
const distinctBlocks = (...files: Buffer[]) => {
  const s = new Set<string>();
  for (const f of files) {
    for (let i = 0; i < f.length; i += BS) {
      const b = f.subarray(i, i + BS);
      if (b.some((x) => x !== 0)) s.add(md5(b));
    }
  }
  return s.size;
};

describe('gateway gc: deleted files', () => {
  it("a deleted file's blocks go at the next gc; a file with the same content keeps them", async () => {
    const x = content();
    const y = content();
    const mx = await upload('x1', x);
    expect(await upload('x2', x)).toBe(mx); // one map, named by the content
    await upload('y', y);
    const stored = distinctBlocks(x, y);
    expect(await objects(blocks)).toHaveLength(stored);

    // Nothing is garbage while every file is there.
    expect(await gc()).toMatchObject({ freedObjects: 0, gatewayMaps: 0 });

    // x1 goes: x2 still names the map, nothing goes.
    await remove('x1');
    expect(await du()).toMatchObject({ unreferencedBytes: 0, reclaimableObjects: 0 });
    expect(await gc()).toMatchObject({ freedObjects: 0, gatewayMaps: 0 });
    await expectFile('x2', x);

    // y goes: its map and its blocks go (at once: nothing else was under way), x2 reads whole.
    await remove('y');
    const before = await du();
    expect(before.reclaimableObjects).toBe(distinctBlocks(y));
    const r = await gc();
    expect(r).toMatchObject({ gatewayMaps: 1, freedObjects: distinctBlocks(y) });
    await expectFile('x2', x);
    expect(await du()).toMatchObject({ unreferencedBytes: 0, reclaimableBytes: 0, reclaimableObjects: 0 });

    // The last file of x goes: the store is empty again (maps: only headers of removed ones).
    await remove('x2');
    expect(await gc()).toMatchObject({ gatewayMaps: 1, freedObjects: distinctBlocks(x) });
    const after = await du();
    expect(after).toMatchObject({ maps: 0, blockerObjects: 0, unreferencedBytes: 0, reclaimableBytes: 0 });
    expect(await objects(blocks)).toEqual([]);
    // The removed maps' markers go with their map blocks (those younger than a second stay a run).
    await gc({ now: () => Date.now() + HOUR });
    expect(await objects(maps, GATEWAY_OWNED_PREFIX)).toEqual([]);
    expect(await mapper.list()).toEqual([]);

    // The same content uploaded again makes the map again, whole.
    expect(await upload('x3', x)).toBe(mx);
    await expectFile('x3', x);
    expect(await gc({ graceMs: 0, now: () => Date.now() + HOUR })).toMatchObject({ freedObjects: 0 });
    await expectFile('x3', x);
  });

  it("vlmc du before gc: a deleted file's blocks are unreferenced, not a live map's", async () => {
    const x = content();
    const y = content();
    const mx = await upload('x', x);
    const my = await upload('y', y);
    const live = await du();
    expect(live).toMatchObject({ maps: 2, size: 2 * x.length, unreferencedBytes: 0, reclaimableBytes: 0 });
    expect(await objects(blocks)).toHaveLength(distinctBlocks(x, y));

    // y is deleted, gc has not run: its map is still there, but no file names it any more.
    await remove('y');
    expect((await mapper.list()).map((v) => v.name).sort()).toEqual([mx, my].sort());
    const before = await du();
    expect(before).toMatchObject({
      maps: 1,
      size: x.length,
      objects: distinctBlocks(x),
      unreferencedObjects: distinctBlocks(y),
      reclaimableObjects: distinctBlocks(y),
    });
    // y's blocks: 3 full ones and the last one's 1000 bytes (stored whole or partial).
    expect(before.unreferencedBytes).toBe(before.blockerBytes - before.bytesStored);
    expect(before.unreferencedBytes).toBeGreaterThanOrEqual(3 * BS + 1000);
    expect(before.unreferencedBytes).toBe(before.reclaimableBytes);
    // Without blockerm (the gateway's records), the map counts as live.
    expect(await storeUsage({ mapper, blockerb: blocks })).toMatchObject({ maps: 2, unreferencedBytes: 0 });

    // gc frees exactly that, and du agrees afterwards; x reads whole.
    expect(await gc()).toMatchObject({
      gatewayMaps: 1,
      freedObjects: before.unreferencedObjects,
      freedBytes: before.unreferencedBytes,
    });
    expect(await du()).toMatchObject({ maps: 1, unreferencedBytes: 0, reclaimableBytes: 0 });
    await expectFile('x', x);
  });

  it('an overwritten file: the old content goes, the new one stays', async () => {
    const a = content();
    const b = content();
    await upload('f', a);
    await upload('f', b);
    expect(await gc()).toMatchObject({ gatewayMaps: 1, freedObjects: distinctBlocks(a) });
    await expectFile('f', b);
    expect(await du()).toMatchObject({ unreferencedBytes: 0, reclaimableBytes: 0 });
  });

  it('a vlmc hash image of the same content and a volume cloned from a file keep their blocks', async () => {
    const x = content();
    const size = x.length;
    // A user's image with x, hashed as `vlmc hash` does: the same content map the file has.
    await mapper.create('img', { size, blocksize: BS });
    await writeVolume('img', x);
    await mapper.snapshot('img', 'img-snap');
    await upload('before-hash', x); // the gateway makes the map...
    const hashed = await mapper.hash('img-snap'); // ...and vlmc hash finds it: the user's now
    expect((await fetch(url('before-hash'), { method: 'HEAD' })).headers.get('x-archipelago-map')).toBe(
      hashed.name,
    );
    await remove('before-hash');
    await mapper.remove('img');
    await mapper.remove('img-snap');
    await mapper.purgeExpiredTrash(Date.now(), 0);
    expect(await gc()).toMatchObject({ gatewayMaps: 0 });
    expect(Buffer.compare(await readVolume(hashed.name, size), x)).toBe(0);

    // A file made after the user's map: it names the user's map, which stays when the file goes.
    await upload('after-hash', x);
    await remove('after-hash');
    expect(await gc()).toMatchObject({ gatewayMaps: 0, freedObjects: 0 });
    expect(Buffer.compare(await readVolume(hashed.name, size), x)).toBe(0);

    // A volume cloned from a file (X-Archipelago-Clone-To): the file goes, the clone keeps every byte.
    const y = content();
    await upload('y', y);
    const cl = await fetch(url('y'), { method: 'POST', headers: { 'X-Archipelago-Clone-To': 'from-y' } });
    expect(cl.status).toBe(201);
    await remove('y');
    expect(await gc({ graceMs: 0, now: () => Date.now() + HOUR })).toMatchObject({
      gatewayMaps: 1,
      freedObjects: 0,
    });
    expect(Buffer.compare(await readVolume('from-y', y.length), y)).toBe(0);
    expect(await du()).toMatchObject({ unreferencedBytes: 0, reclaimableBytes: 0 });
  });
});

describe('gateway gc: races', () => {
  it("a DELETE racing an upload of the same content: the upload's file reads back whole, gc between", async () => {
    const x = content();
    const map = await upload('a', x);
    // b's upload sends its first blocks (all stored already, as a's), then stalls.
    let push!: (b: Buffer | null) => void;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        push = (b) => (b ? c.enqueue(b) : c.close());
      },
    });
    const put = fetch(url('b'), { method: 'PUT', body, duplex: 'half' } as RequestInit);
    push(x.subarray(0, 2 * BS));
    await until(async () => (await listGcHolds(maps)).some((h) => h.what.includes('t/c/b')));
    // a goes and gc runs: no file names the map now, so gc removes it; b's blocks stay (b's
    // upload holds them), and b's commit makes the map again.
    await remove('a');
    const r = await gc({ graceMs: 0 });
    expect(r.gatewayMaps).toBe(1);
    expect(r.freedObjects).toBe(0);
    expect(await mapper.list()).toEqual([]);
    push(x.subarray(2 * BS));
    push(null);
    const done = await put;
    expect(done.status).toBe(201);
    expect(done.headers.get('x-archipelago-map')).toBe(map);
    await expectFile('b', x);
    expect(await gc({ graceMs: 0, now: () => Date.now() + HOUR })).toMatchObject({
      freedObjects: 0,
      gatewayMaps: 0,
    });
    await expectFile('b', x);
  });

  it('gc in a loop while files are uploaded and deleted: every file there reads whole', async () => {
    const contents = [content(), content(), content()];
    const model = new Map<string, Buffer>();
    let stop = false;
    let runs = 0;
    let removedMaps = 0;
    const loop = (async () => {
      while (!stop) {
        const r = await gc({ graceMs: 0 });
        removedMaps += r.gatewayMaps;
        runs++;
      }
    })();
    try {
      for (let i = 0; i < 24; i++) {
        const name = `f${i % 5}`;
        if (model.has(name) && i % 3 === 0) {
          await remove(name);
          model.delete(name);
        } else {
          const data = contents[(i * 7) % 3]!;
          await upload(name, data);
          model.set(name, data);
        }
        for (const [n, d] of model) await expectFile(n, d);
      }
      for (const n of [...model.keys()]) {
        await remove(n);
        model.delete(n);
        expect((await download(n)).status).toBe(404);
        for (const [m, d] of model) await expectFile(m, d);
      }
    } finally {
      stop = true;
      await loop;
    }
    expect(runs).toBeGreaterThan(1);
    expect(removedMaps).toBeGreaterThan(0);
    // Whatever the runs under way had to keep (held), a later run frees.
    await gc();
    expect(await du()).toMatchObject({
      maps: 0,
      blockerObjects: 0,
      unreferencedBytes: 0,
      reclaimableBytes: 0,
    });
  }, 30_000);
});

/** Writes `data` at 0 of volume `vol` through the mapper and the data blocker. */
async function writeVolume(vol: string, data: Buffer): Promise<void> {
  let pos = 0;
  for (const s of await mapper.mapWrite(vol, 0, data.length)) {
    await blocks.write(s.target, s.offset, data.subarray(pos, pos + s.size));
    pos += s.size;
  }
}

async function readVolume(vol: string, length: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const s of await mapper.mapRead(vol, 0, length)) {
    parts.push(s.zero ? Buffer.alloc(s.size) : await blocks.read(s.target, s.offset, s.size));
  }
  return Buffer.concat(parts);
}

async function until(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
