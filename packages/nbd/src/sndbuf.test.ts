/** sendBufferBytes: SO_SNDBUF on accepted sockets through @archipelago/fastio. */
import { sendBufferAvailable } from '@archipelago/fastio';
import { afterEach, describe, expect, it } from 'vitest';
import { type Fixture, startServer } from './__fixtures__/harness.js';
import { RawClient } from './__fixtures__/raw-client.js';
import { CMD } from './constants.js';
import { MemoryExport } from './exports.js';
import { NbdServer } from './server.js';

let fx: Fixture | undefined;
let client: RawClient | undefined;
afterEach(async () => {
  client?.destroy();
  await fx?.close();
  fx = undefined;
});

describe('sendBufferBytes', () => {
  it('rejects a bad value', () => {
    const exports = () => undefined;
    expect(() => new NbdServer({ exports, sendBufferBytes: -1 })).toThrow(TypeError);
    expect(() => new NbdServer({ exports, sendBufferBytes: 1.5 })).toThrow(TypeError);
    expect(() => new NbdServer({ exports, sendBufferBytes: 2 ** 31 })).toThrow(TypeError);
  });

  it('sets SO_SNDBUF on accepted sockets, and the connection serves as usual', async () => {
    const mem = new MemoryExport({ name: 'mem', size: 1 << 20 });
    await mem.write(4096, Buffer.alloc(4096, 7), { fua: false });
    fx = await startServer([mem], { sendBufferBytes: 256 * 1024 });
    client = await RawClient.connect({ path: fx.sock });
    await client.handshake('mem', {});
    client.sendRequest(CMD.READ, { cookie: 1n, offset: 4096, length: 4096 });
    const r = await client.readReply(() => 4096);
    expect(r).toMatchObject({ kind: 'simple', error: 0 });
    expect((r as { data: Buffer }).data.equals(Buffer.alloc(4096, 7))).toBe(true);
    const set = fx.logs.find((l) => l.msg === 'nbd: send buffer set');
    if (process.platform === 'linux' && sendBufferAvailable) {
      // The kernel doubles the value (or caps it at net.core.wmem_max first).
      expect(set?.obj).toMatchObject({ sndbuf: expect.any(Number) });
      expect((set?.obj as { sndbuf?: number } | undefined)?.sndbuf ?? 0).toBeGreaterThan(0);
    }
  });

  it('sets it by default (4 MiB)', async () => {
    fx = await startServer([new MemoryExport({ name: 'mem', size: 1 << 20 })]);
    client = await RawClient.connect({ path: fx.sock });
    await client.handshake('mem', {});
    if (process.platform === 'linux' && sendBufferAvailable) {
      expect(fx.logs.some((l) => l.msg === 'nbd: send buffer set')).toBe(true);
    }
  });

  it('leaves sockets alone with 0', async () => {
    fx = await startServer([new MemoryExport({ name: 'mem', size: 1 << 20 })], { sendBufferBytes: 0 });
    client = await RawClient.connect({ path: fx.sock });
    await client.handshake('mem', {});
    expect(fx.logs.some((l) => String(l.msg).startsWith('nbd: send buffer'))).toBe(false);
  });
});
