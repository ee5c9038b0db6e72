/**
 * WriteBack's packing of small writes, with a scripted sender in place of librados (the real
 * cluster test is in test/write-back.test.ts: the same packing seen in the OSD's op count).
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { describe, expect, it } from 'vitest';
import { HOLD_MAX_WRITE, HOLD_MAX_WRITES, WriteBack } from './write-back.js';

interface Sent {
  name: string;
  bufs: Buffer[];
  offsets: number[];
  settle: (e?: Error) => void;
}

function scripted() {
  const sent: Sent[] = [];
  const wb = new WriteBack(64 * 1024 * 1024, 256, {
    send(name, bufs, offsets) {
      return new Promise<void>((resolve, reject) => {
        sent.push({
          name,
          bufs: bufs.map((b) => Buffer.from(b)),
          offsets: [...offsets],
          settle: (e) => (e ? reject(e) : resolve()),
        });
      });
    },
    error: (e, name) =>
      new ArchipelagoError('EIO', `write ${name}: ${(e as Error).message}`, { details: { name } }),
  });
  /** An admitted write submitted by the caller itself (as RadosBlocker does), settled by hand. */
  const direct = (name: string, bytes: number) => {
    expect(wb.admit(bytes)).toBeNull();
    let settle!: (e?: Error) => void;
    const op = new Promise<void>((resolve, reject) => {
      settle = (e) => (e ? reject(e) : resolve());
    });
    wb.track(name, bytes, op, (e) => new ArchipelagoError('EIO', String(e), { details: { name } }));
    return settle;
  };
  const hold = (name: string, offset: number, data: Buffer) => {
    expect(wb.admit(data.byteLength)).toBeNull();
    const held = wb.hold(name, offset, data);
    if (!held) wb.cancel(data.byteLength);
    return held;
  };
  return { wb, sent, direct, hold };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('WriteBack packing', () => {
  it('holds small writes only behind a write in flight to the same object, and sends them as one op when it settles', async () => {
    const { wb, sent, direct, hold } = scripted();
    expect(hold('a', 0, Buffer.from('x'))).toBe(false); // nothing in flight to "a"
    const first = direct('a', 4096);
    const buf = Buffer.from('one');
    expect(hold('a', 8192, buf)).toBe(true);
    buf.write('TWO'); // the caller reuses its buffer: the held write kept a copy
    expect(hold('a', 100, buf)).toBe(true);
    expect(hold('b', 0, Buffer.from('b'))).toBe(false); // another object: not held
    expect([wb.heldWrites, wb.pendingWrites, wb.pendingBytes]).toEqual([2, 3, 4102]);
    expect(sent).toHaveLength(0);
    first();
    await tick();
    expect(sent.map((s) => [s.name, s.offsets, s.bufs.map(String)])).toEqual([
      ['a', [8192, 100], ['one', 'TWO']],
    ]);
    expect([wb.heldWrites, wb.pendingWrites]).toEqual([0, 2]);
    sent[0]!.settle();
    await wb.flush();
    expect([wb.pendingWrites, wb.pendingBytes]).toEqual([0, 0]);
  });

  it('does not hold large writes, nor more than a full batch', () => {
    const { wb, direct, hold } = scripted();
    direct('a', 1);
    expect(hold('a', 0, Buffer.alloc(HOLD_MAX_WRITE + 1))).toBe(false);
    for (let i = 0; i < HOLD_MAX_WRITES; i++) expect(hold('a', i, Buffer.alloc(1))).toBe(true);
    expect(hold('a', 0, Buffer.alloc(1))).toBe(false);
    expect(wb.heldWrites).toBe(HOLD_MAX_WRITES);
  });

  it('sends the held writes at once for pendingFor, pendingWithPrefix and flush (after those in flight)', async () => {
    const { wb, sent, direct, hold } = scripted();
    direct('vol_1', 1);
    direct('vol_2', 1);
    direct('other', 1);
    hold('vol_1', 0, Buffer.from('1'));
    hold('vol_2', 0, Buffer.from('2'));
    hold('other', 0, Buffer.from('3'));
    expect(wb.pendingFor('vol_1')).not.toBeNull();
    expect(sent.map((s) => s.name)).toEqual(['vol_1']);
    expect(wb.pendingWithPrefix('vol_')).not.toBeNull();
    expect(sent.map((s) => s.name)).toEqual(['vol_1', 'vol_2']);
    const flushed = wb.flush();
    expect(sent.map((s) => s.name)).toEqual(['vol_1', 'vol_2', 'other']);
    expect(wb.heldWrites).toBe(0);
    void flushed.catch(() => {});
  });

  it('reports a failed batch at the next flush, naming the object, and gives back its room', async () => {
    const { wb, sent, direct, hold } = scripted();
    const first = direct('obj', 10);
    hold('obj', 0, Buffer.alloc(5));
    hold('obj', 5, Buffer.alloc(5));
    first();
    await tick();
    sent[0]!.settle(new Error('ENOSPC'));
    await expect(wb.flush()).rejects.toMatchObject({ code: 'EIO', details: { name: 'obj' } });
    expect([wb.pendingWrites, wb.pendingBytes]).toEqual([0, 0]);
    await expect(wb.flush()).resolves.toBeUndefined(); // reported once
  });
});
