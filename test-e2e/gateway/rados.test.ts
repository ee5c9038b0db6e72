/**
 * The gateway on RADOS (blockerm and blockerb in the test cluster's pools, as `archipelago
 * gateway` serves a configuration with rados_blocker): deleted files' blocks are reclaimed by gc
 * (@archipelago/mapper collectGarbage, what `vlmc gc` runs), a file with the same content keeps
 * every byte, and nothing is left unreferenced.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RadosBlocker } from '../../packages/blocker-rados/src/index.js';
import { freshNamespace, openPair } from '../../packages/blocker-rados/test/cluster.js';
import { type Gateway, startGateway } from '../../packages/gateway/src/index.js';
import { collectGarbage, Mapper, storeUsage } from '../../packages/mapper/src/index.js';

const BS = 64 * 1024;
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

let pair: { blockerm: RadosBlocker; blockerb: RadosBlocker };
let mapper: Mapper;
let gw: Gateway;

beforeAll(async () => {
  pair = await openPair(freshNamespace('gwgc'), 'gwgc_rados');
  mapper = new Mapper({ ...pair });
  gw = await startGateway({ ...pair, mapper, blocksize: BS, auth: false });
  expect((await fetch(`${gw.url}/t/c`, { method: 'PUT' })).status).toBe(201);
}, 180_000);

afterAll(async () => {
  await gw?.close();
  await mapper?.close();
  await Promise.all([pair?.blockerm.close(), pair?.blockerb.close()]);
});

describe('gateway on RADOS: deleted files are reclaimed', () => {
  it('upload twice and another, delete: gc frees what no file names; the twin reads whole', async () => {
    const url = (n: string) => `${gw.url}/t/c/${n}`;
    const put = async (n: string, b: Buffer) =>
      expect((await fetch(url(n), { method: 'PUT', body: b })).status).toBe(201);
    const del = async (n: string) => expect((await fetch(url(n), { method: 'DELETE' })).status).toBe(204);
    const gc = () => collectGarbage({ ...pair });
    const usage = () => storeUsage({ mapper, blockerb: pair.blockerb });
    const x = Buffer.concat([randomBytes(2 * BS), Buffer.alloc(BS), randomBytes(100)]);
    const y = randomBytes(BS + 7);
    await put('first', x);
    await put('second', x);
    await put('other', y);
    expect(await usage()).toMatchObject({ blockerObjects: 5, unreferencedBytes: 0 });
    await del('first');
    await del('other');
    expect(await gc()).toMatchObject({ gatewayMaps: 1, freedObjects: 2, freedBytes: y.length });
    const got = await fetch(url('second'));
    expect(got.headers.get('etag')).toBe(md5(x));
    expect(md5(Buffer.from(await got.arrayBuffer()))).toBe(md5(x));
    expect(await usage()).toMatchObject({ blockerObjects: 3, unreferencedBytes: 0 });
    await del('second');
    expect(await gc()).toMatchObject({ gatewayMaps: 1, freedObjects: 3 });
    expect(await usage()).toMatchObject({ maps: 0, blockerObjects: 0, unreferencedBytes: 0 });
    expect(await gc()).toMatchObject({ reclaimableBytes: 0, unreferencedBytes: 0 });
  });
});
