import { FaultyBlocker } from '@archipelago/blocker';
import type { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { dataObjectName, encodeHeaderV2, ZERO_BLOCK } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { codeOf, get, put, stack, useTempStack } from './__fixtures__/stack.js';
import { Mapper } from './mapper.js';

const MiB = 1024 * 1024;
const BS = 4096;

let dir: string;
let maps: FileBlocker;
let blocks: FileBlocker;
let mapper: Mapper;

async function countObjects(b: FileBlocker, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const n of b.list(prefix)) out.push(n);
  return out.sort();
}

useTempStack('archip-mapper-', 'hostA_embedded', (s) => {
  ({ dir, maps, blocks, mapper } = s);
});

describe('create, info, list, remove', () => {
  it('creates a thin volume of zero blocks and reports it', async () => {
    const info = await mapper.create('vol1', { size: 10 * MiB });
    expect(info).toMatchObject({
      name: 'vol1',
      size: 10 * MiB,
      blocksize: 4 * MiB,
      objects: 3,
      allocated: 0,
      epoch: 1n,
    });
    expect(info.readonly).toBe(false);
    expect(await countObjects(blocks)).toEqual([]);
    expect((await mapper.list()).map((v) => v.name)).toEqual(['vol1']);
    expect((await get(mapper, blocks, 'vol1', 0, 8192)).every((x) => x === 0)).toBe(true);
  });

  it('refuses duplicates, bad names and bad sizes with stable codes', async () => {
    await mapper.create('dup', { size: MiB });
    expect(await codeOf(mapper.create('dup', { size: MiB }))).toBe('EEXIST_VOLUME');
    expect(await codeOf(mapper.create('x_lock', { size: MiB }))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.create('archip_x', { size: MiB }))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.create('v_0123456789abcdef', { size: MiB }))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.create('../etc', { size: MiB }))).toBe('EINVAL_NAME');
    expect(await codeOf(mapper.create('zero', { size: 0 }))).toBe('EINVAL_SIZE');
    expect(await codeOf(mapper.info('missing'))).toBe('ENOENT_VOLUME');
  });

  it('remove keeps the header so a re-created volume takes the next epoch', async () => {
    await mapper.create('ep', { size: 2 * BS, blocksize: BS });
    await put(mapper, blocks, 'ep', 0, Buffer.alloc(BS, 7));
    await mapper.closeVolume('ep');
    expect(await countObjects(blocks)).toEqual([dataObjectName('ep', 1n, 0)]);
    await mapper.remove('ep');
    // The removed volume is in the trash (its objects with it) until it is purged.
    expect(await countObjects(blocks)).toEqual([dataObjectName('ep', 1n, 0)]);
    expect(await codeOf(mapper.info('ep'))).toBe('ENOENT_VOLUME');
    expect((await mapper.purgeExpiredTrash(Date.now())).map((e) => e.name)).toEqual(['ep']);
    expect(await countObjects(blocks)).toEqual([]);
    expect(await maps.exists('ep')).toBe(true);
    expect((await mapper.list()).length).toBe(0);
    const again = await mapper.create('ep', { size: BS, blocksize: BS });
    expect(again.epoch).toBe(2n);
  });
});

describe('snapshot and clone', () => {
  it('snapshot shares objects; the next write to the origin copies up under a new epoch', async () => {
    await mapper.create('origin', { size: 3 * BS, blocksize: BS });
    await put(mapper, blocks, 'origin', 0, Buffer.alloc(BS, 1));
    const before = await countObjects(blocks);
    const snap = await mapper.snapshot('origin', 'snap1');
    expect(snap.readonly).toBe(true);
    expect(await countObjects(blocks)).toEqual(before); // O(map), no data copied
    const origin = await mapper.info('origin');
    expect(origin.epoch).toBe(2n);
    expect(origin.writable).toBe(0);
    await put(mapper, blocks, 'origin', 10, Buffer.from('changed'));
    const segs = await mapper.mapRead('origin', 0, 1);
    expect(segs[0]!.target).toBe(dataObjectName('origin', 2n, 0));
    expect((await get(mapper, blocks, 'snap1', 0, BS)).equals(Buffer.alloc(BS, 1))).toBe(true);
    const now = await get(mapper, blocks, 'origin', 0, 20);
    expect(now.subarray(10, 17).toString()).toBe('changed');
    expect(now[0]).toBe(1);
    expect(await codeOf(mapper.mapWrite('snap1', 0, 1))).toBe('EREADONLY');
    expect(await codeOf(mapper.snapshot('origin', 'snap1'))).toBe('EEXIST_VOLUME');
  });

  it('clones only from snapshots, at least the snapshot size, without copying data', async () => {
    await mapper.create('base', { size: 2 * BS, blocksize: BS });
    await put(mapper, blocks, 'base', 0, Buffer.alloc(2 * BS, 9));
    expect(await codeOf(mapper.clone('base', 'c0'))).toBe('ENOTSNAPSHOT');
    await mapper.snapshot('base', 'base-snap');
    expect(await codeOf(mapper.clone('base-snap', 'c1', { size: BS }))).toBe('EINVAL_SIZE');
    const n = (await countObjects(blocks)).length;
    const c = await mapper.clone('base-snap', 'c1', { size: 4 * BS });
    expect(c).toMatchObject({ size: 4 * BS, objects: 4, allocated: 2, writable: 0, epoch: 1n });
    expect((await countObjects(blocks)).length).toBe(n);
    await put(mapper, blocks, 'c1', BS - 2, Buffer.from('XYZW'));
    expect((await get(mapper, blocks, 'c1', BS - 2, 4)).toString()).toBe('XYZW');
    expect((await get(mapper, blocks, 'base-snap', BS - 2, 4)).equals(Buffer.alloc(4, 9))).toBe(true);
    expect((await get(mapper, blocks, 'c1', 3 * BS, BS)).every((x) => x === 0)).toBe(true);
  });

  it('a snapshot of a 1 TiB thin volume and its clone take well under a second each', async () => {
    await mapper.create('big', { size: 2 ** 40 });
    let t = performance.now();
    await mapper.snapshot('big', 'big-snap');
    const snapMs = performance.now() - t;
    t = performance.now();
    await mapper.clone('big-snap', 'big-clone');
    const cloneMs = performance.now() - t;
    // Not a timing assertion: this guards against O(data) behaviour (which would take minutes).
    expect(snapMs + cloneMs).toBeLessThan(30_000);
  });
});

describe('rename and resize', () => {
  it('renames a volume; the old name stays reserved by its epoch', async () => {
    await mapper.create('old', { size: 2 * BS, blocksize: BS });
    await put(mapper, blocks, 'old', 0, Buffer.from('hello'));
    await mapper.closeVolume('old');
    await mapper.rename('old', 'new');
    expect(await codeOf(mapper.info('old'))).toBe('ENOENT_VOLUME');
    expect((await get(mapper, blocks, 'new', 0, 5)).toString()).toBe('hello');
    const again = await mapper.create('old', { size: BS, blocksize: BS });
    expect(again.epoch).toBe(2n);
    await mapper.create('taken', { size: BS, blocksize: BS });
    expect(await codeOf(mapper.rename('new', 'taken'))).toBe('EEXIST_VOLUME');
  });

  it('grows with zeros and shrinks, freeing owned objects past the end', async () => {
    await mapper.create('rs', { size: 4 * BS, blocksize: BS });
    await put(mapper, blocks, 'rs', 0, Buffer.alloc(4 * BS, 5));
    expect((await countObjects(blocks)).length).toBe(4);
    await mapper.resize('rs', BS + 100);
    expect((await countObjects(blocks)).length).toBe(2);
    await mapper.resize('rs', 3 * BS);
    const data = await get(mapper, blocks, 'rs', 0, 3 * BS);
    expect(data.subarray(0, BS + 100).every((x) => x === 5)).toBe(true);
    expect(data.subarray(BS + 100).every((x) => x === 0)).toBe(true);
    await mapper.snapshot('rs', 'rs-snap');
    expect(await codeOf(mapper.resize('rs-snap', BS))).toBe('EREADONLY');
  });
});

describe('locks', () => {
  it('another owner: reads are served uncached, writes wait then fail, map changes fail at once', async () => {
    await mapper.create('shared', { size: 2 * BS, blocksize: BS });
    await mapper.openVolume('shared');
    await put(mapper, blocks, 'shared', 0, Buffer.from('mine'));
    const other = stack(dir, 'hostB_embedded', 300);
    try {
      expect((await get(other.mapper, other.b, 'shared', 0, 4)).toString()).toBe('mine');
      const w = await codeOf(other.mapper.mapWrite('shared', 0, 1));
      expect(w).toBe('ELOCKED');
      const e = await other.mapper.snapshot('shared', 'snapx').catch((x: unknown) => x);
      expect(ArchipelagoError.is(e, 'ELOCKED')).toBe(true);
      expect((e as ArchipelagoError).details.owner).toBe('hostA_embedded');
      expect((await other.mapper.info('shared')).lockOwner).toBe('hostA_embedded');
      // A waiting write proceeds once the holder closes.
      const slow = stack(dir, 'hostB_embedded', 5000);
      const pending = slow.mapper.mapWrite('shared', 0, 1);
      await new Promise((r) => setTimeout(r, 200));
      await mapper.closeVolume('shared');
      expect((await pending)[0]!.target).toBe(dataObjectName('shared', 1n, 0));
      await slow.mapper.close();
      // Force unlock from another owner.
      await mapper.openVolume('shared');
      expect(await codeOf(other.mapper.unlock('shared'))).toBe('ELOCKED');
      await other.mapper.unlock('shared', { force: true });
      expect(await maps.lockOwner('shared')).toBeNull();
    } finally {
      await other.mapper.close();
    }
  });

  it('never releases a lock this host held before the call (vlmc lock from another process)', async () => {
    // An earlier process of this host locked the names; this mapper is a new process.
    await maps.acquire('prelocked');
    await mapper.create('prelocked', { size: 2 * BS, blocksize: BS });
    expect(await maps.lockOwner('prelocked')).toBe('hostA_embedded');
    await maps.acquire('ghost');
    expect(await codeOf(mapper.openVolume('ghost'))).toBe('ENOENT_VOLUME');
    expect(await maps.lockOwner('ghost')).toBe('hostA_embedded');
    const fresh = stack(dir, 'hostA_embedded').mapper;
    const info = await fresh.resize('prelocked', 3 * BS);
    expect(info.lockOwner).toBe('hostA_embedded');
    await fresh.snapshot('prelocked', 'prelocked-snap');
    expect(await maps.lockOwner('prelocked')).toBe('hostA_embedded');
    // A lock the call took itself is released, and info says so.
    const c = await fresh.create('unlocked', { size: BS, blocksize: BS });
    expect(c.lockOwner).toBeNull();
    expect((await fresh.resize('unlocked', 2 * BS)).lockOwner).toBeNull();
    await fresh.close();
  });

  it('lists maps from their headers only', async () => {
    await mapper.create('l1', { size: 3 * BS, blocksize: BS });
    await mapper.snapshot('l1', 'l1-snap');
    await blocks.writeFull('not-a-map', Buffer.from('data'));
    const all = await mapper.list();
    expect(all.map((v) => [v.name, v.readonly, v.objects])).toEqual([
      ['l1', false, 3],
      ['l1-snap', true, 3],
    ]);
  });

  it('open is idempotent for this owner and close releases the lock', async () => {
    await mapper.create('op', { size: BS, blocksize: BS });
    await mapper.openVolume('op');
    await mapper.openVolume('op');
    expect(await maps.lockOwner('op')).toBe('hostA_embedded');
    await mapper.closeVolume('op');
    expect(await maps.lockOwner('op')).toBeNull();
  });
});

describe('crash safety', () => {
  it('a crash between a copy-up and its map entry leaves the volume reading its old data', async () => {
    const faultyMaps = new FaultyBlocker(maps);
    const m = new Mapper({ blockerm: faultyMaps, blockerb: blocks });
    await m.create('cs', { size: 2 * BS, blocksize: BS });
    await put(m, blocks, 'cs', 0, Buffer.alloc(BS, 0x11));
    await m.snapshot('cs', 'cs-snap');
    // The "crash": the single-entry write of the copy-up never happens.
    faultyMaps.fail({ method: 'write', match: /^cs_[0-9a-f]{16}$/ });
    expect(await codeOf(m.mapWrite('cs', 0, 1))).toBe('EIO');
    // The copy itself was made and is durable...
    expect(await blocks.exists(dataObjectName('cs', 2n, 0))).toBe(true);
    // ...but a fresh mapper (the restarted process) still sees the old entry and old data.
    const fresh = stack(dir, 'hostA_embedded').mapper;
    expect((await get(fresh, blocks, 'cs', 0, BS)).equals(Buffer.alloc(BS, 0x11))).toBe(true);
    // And it can finish the write: the copy-up is redone over the leftover object.
    faultyMaps.clear();
    await fresh.unlock('cs', { force: true });
    await put(fresh, blocks, 'cs', 0, Buffer.from([0x22]));
    expect((await get(fresh, blocks, 'cs', 0, 2)).equals(Buffer.from([0x22, 0x11]))).toBe(true);
    expect((await get(fresh, blocks, 'cs-snap', 0, 2)).equals(Buffer.from([0x11, 0x11]))).toBe(true);
    await fresh.close();
  });

  it('copy-up data is written before the entry that names it', async () => {
    const order: string[] = [];
    const spyMaps = new FaultyBlocker(maps);
    const spyBlocks = new FaultyBlocker(blocks);
    const origWrite = spyMaps.write.bind(spyMaps);
    spyMaps.write = async (n, o, d) => {
      order.push(`entry ${n}`);
      return origWrite(n, o, d);
    };
    const origCopy = spyBlocks.copy.bind(spyBlocks);
    spyBlocks.copy = async (s, d, o) => {
      await origCopy(s, d, o);
      order.push(`copied ${d}`);
    };
    const m = new Mapper({ blockerm: spyMaps, blockerb: spyBlocks });
    await m.create('ord', { size: BS, blocksize: BS });
    await put(m, blocks, 'ord', 0, Buffer.alloc(BS, 3));
    await m.snapshot('ord', 'ord-snap');
    order.length = 0;
    await m.mapWrite('ord', 0, 1);
    expect(order).toEqual([`copied ${dataObjectName('ord', 2n, 0)}`, 'entry ord_0000000000000000']);
    await m.close();
  });
});

describe('legacy maps', () => {
  it('reads a v1 map and upgrades it to v2 when opened with the lock', async () => {
    // v1: LE {u32 version=1, u64 size} then 33-byte entries {u8 flag, 32-byte digest}.
    const digest = Buffer.alloc(32, 0xab);
    const obj = Buffer.alloc(12 + 2 * 33);
    obj.writeUInt32LE(1, 0);
    obj.writeBigUInt64LE(BigInt(8 * MiB), 4);
    obj[12] = 1; // writable archipelago object
    digest.copy(obj, 13);
    obj[45] = 0; // read-only content object: the zero block
    Buffer.from(ZERO_BLOCK, 'hex').copy(obj, 46);
    await maps.writeFull('legacy', obj);
    const objName = `archip_${digest.toString('hex')}`;
    await blocks.writeFull(objName, Buffer.from('v1 data'));
    const info = await mapper.info('legacy');
    expect(info).toMatchObject({ version: 1, size: 8 * MiB, objects: 2, allocated: 1 });
    expect((await get(mapper, blocks, 'legacy', 0, 7)).toString()).toBe('v1 data');
    // mapRead took the lock, so the map is now v2 on storage.
    const head = await maps.read('legacy', 0, 32);
    expect(head.subarray(0, 4).toString()).toBe('AMF.');
    await mapper.closeVolume('legacy');
    const again = await stack(dir, 'hostC_embedded').mapper.info('legacy');
    expect(again).toMatchObject({ version: 2, size: 8 * MiB, allocated: 1 });
    const [seg] = await mapper.mapRead('legacy', 0, 1);
    expect(seg!.target).toBe(objName);
  });

  it('reads a v0 Pithos hashmap when told to assume v0', async () => {
    const h1 = Buffer.alloc(32, 0x01);
    await maps.writeFull('pithosfile', Buffer.concat([h1, Buffer.from(ZERO_BLOCK, 'hex')]));
    const info = await mapper.info('pithosfile', { assumeV0: true, v0Size: 5 * MiB });
    expect(info).toMatchObject({ version: 0, size: 5 * MiB, readonly: true, objects: 2, allocated: 1 });
    expect(await codeOf(mapper.info('pithosfile'))).toBe('ECORRUPT_MAP');
  });

  it('a corrupt header gives ECORRUPT_MAP naming the volume, and nothing is written', async () => {
    const header = encodeHeaderV2({ size: MiB, blocksize: 4096, flags: 0, epoch: 1n });
    header.writeUInt32BE(1000, 16); // blocksize field: not a power of two
    await maps.writeFull('bad', header);
    const e = await mapper.info('bad').catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'ECORRUPT_MAP')).toBe(true);
    expect((e as Error).message).toContain('bad');
    expect(await codeOf(mapper.openVolume('bad'))).toBe('ECORRUPT_MAP');
    expect(await maps.lockOwner('bad')).toBeNull();
  });
});
