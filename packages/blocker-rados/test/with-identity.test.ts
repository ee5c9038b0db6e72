/** RadosBlocker.withIdentity: lock views sharing one connection and pool context. */
import { afterEach, describe, expect, it } from 'vitest';
import type { RadosBlocker } from '../src/index.js';
import { ensureCluster, freshNamespace, lockInfo, openRados } from './cluster.js';

const opened: RadosBlocker[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((b) => b.close()));
});

describe('RadosBlocker.withIdentity', () => {
  it('takes locks as the view identity on the same client; objects are shared; close is the parent’s', async () => {
    const { conf } = await ensureCluster();
    const ns = freshNamespace('views');
    const main = await openRados({ pool: 'maps', namespace: ns, identity: 'host_peer' });
    opened.push(main);
    const a = main.withIdentity('hostA_1');
    const b = main.withIdentity('hostB_1');
    expect(main.withIdentity('host_peer')).toBe(main);
    expect([a.identity, b.identity, main.identity]).toEqual(['hostA_1', 'hostB_1', 'host_peer']);
    expect(a.cookie.split('#')[1]).toBe(main.cookie.split('#')[1]);
    expect(a.clientName).toBe(main.clientName);
    expect(() => main.withIdentity('')).toThrow(TypeError);

    await a.acquire('v');
    const info = await lockInfo(conf, 'maps', ns, 'v');
    expect(info.lockers).toHaveLength(1);
    expect(info.lockers[0]?.cookie).toBe(a.cookie);
    expect(info.lockers[0]?.description).toContain('archipelago hostA_1 on ');
    expect(info.lockers[0]?.name).toBe(main.clientName);
    await expect(b.acquire('v')).rejects.toMatchObject({ code: 'ELOCKED', details: { owner: 'hostA_1' } });
    await expect(main.acquire('v')).rejects.toMatchObject({ code: 'ELOCKED' });
    // a second view of the same identity is the same owner (same cookie)
    await main.withIdentity('hostA_1').acquire('v');
    const waiting = b.acquire('v', { wait: true, timeoutMs: 10_000 });
    await a.release('v');
    await waiting;
    expect(await main.lockOwner('v')).toBe('hostB_1');
    await b.release('v');

    await a.writeFull('obj', Buffer.from('shared'));
    expect((await b.read('obj', 0, 6)).toString()).toBe('shared');
    await a.close(); // a view's close does nothing
    expect(await b.info('obj')).toMatchObject({ size: 6 });
    await main.close();
    await expect(a.read('obj', 0, 1)).rejects.toMatchObject({ code: 'ECLOSED' });
  });
});
