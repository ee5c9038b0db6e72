/**
 * The merging rules with a scripted `submit` that records every op and settles it when told (the
 * blocker's write-back tests run the same code on a real, paused cluster: test/write-back.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { Coalescer } from './coalesce.js';

interface Op {
  name: string;
  offset: number;
  bytes: string;
  commit: () => void;
  fail: (e: Error) => void;
}

function scripted() {
  const ops: Op[] = [];
  const submit = (name: string, offset: number, data: Uint8Array) =>
    new Promise<void>((commit, fail) => {
      ops.push({ name, offset, bytes: Buffer.from(data).toString(), commit, fail });
    });
  return { ops, submit, shown: () => ops.map((o) => `${o.name}@${o.offset}:${o.bytes}`) };
}

const b = (s: string) => Buffer.from(s);
const tick = () => new Promise((r) => setImmediate(r));

describe('Coalescer', () => {
  it('submits a write to an idle object at once; queues writes behind one in flight and sends each run as one op when it settles', async () => {
    const { ops, submit, shown } = scripted();
    const c = new Coalescer(submit);
    const first = c.write('x', 0, b('aa'));
    const second = c.write('x', 2, b('bb'));
    const third = c.write('x', 4, b('cc'));
    const other = c.write('y', 0, b('zz')); // another object: not held
    expect(shown()).toEqual(['x@0:aa', 'y@0:zz']);
    expect(c.queuedRuns).toBe(1);
    ops[0]!.commit();
    await first;
    await tick();
    expect(shown()).toEqual(['x@0:aa', 'y@0:zz', 'x@2:bbcc']);
    let merged = false;
    void Promise.all([second, third]).then(() => (merged = true));
    await tick();
    expect(merged).toBe(false); // they resolve with the op that carries them
    ops[2]!.commit();
    await Promise.all([second, third]);
    ops[1]!.commit();
    await other;
    expect([c.queuedWrites, c.mergedOps]).toEqual([2, 1]);
  });

  it('copies what it queues: the caller may reuse its buffer once the write returned', async () => {
    const { ops, submit, shown } = scripted();
    const c = new Coalescer(submit);
    const buf = b('11');
    void c.write('x', 0, buf);
    void c.write('x', 2, buf);
    buf.write('99');
    void c.write('x', 4, buf);
    ops[0]!.commit();
    await tick();
    expect(shown()).toEqual(['x@0:11', 'x@2:1199']);
  });

  it('keeps the order of overlapping and non-adjacent writes: a write that does not extend the last run starts a new run, sent after it', async () => {
    const { ops, submit, shown } = scripted();
    const c = new Coalescer(submit);
    void c.write('x', 0, b('a'));
    void c.write('x', 10, b('bbbb'));
    void c.write('x', 14, b('cc'));
    void c.write('x', 11, b('XX')); // overlaps the run at 10: a run of its own, after it
    void c.write('x', 13, b('dd')); // extends the last run (11..13)
    void c.write('x', 0, b('e')); // earlier offset: new run
    ops[0]!.commit();
    await tick();
    expect(shown()).toEqual(['x@0:a', 'x@10:bbbbcc', 'x@11:XXdd', 'x@0:e']);
  });

  it('waits for every op in flight on the object before sending its queue', async () => {
    const { ops, submit, shown } = scripted();
    const c = new Coalescer(submit);
    void c.write('x', 0, b('a'));
    c.kick('x'); // nothing queued: no effect
    void c.write('x', 1, b('b')); // queued
    c.kick('x'); // sent now, beside the first
    void c.write('x', 2, b('c')); // two in flight: queued
    ops[0]!.commit();
    await tick();
    expect(shown()).toEqual(['x@0:a', 'x@1:b']);
    ops[1]!.commit();
    await tick();
    expect(shown()).toEqual(['x@0:a', 'x@1:b', 'x@2:c']);
  });

  it('kickAll sends the queues of the objects under a prefix', async () => {
    const { submit, shown } = scripted();
    const c = new Coalescer(submit);
    for (const name of ['vol_1', 'vol_2', 'other']) {
      void c.write(name, 0, b('a'));
      void c.write(name, 1, b('b'));
    }
    c.kickAll('vol_');
    expect(shown().sort()).toEqual(['other@0:a', 'vol_1@0:a', 'vol_1@1:b', 'vol_2@0:a', 'vol_2@1:b']);
    c.kickAll();
    expect(shown()).toContain('other@1:b');
    expect(c.queuedRuns).toBe(0);
  });

  it('caps a run at maxRunBytes', async () => {
    const { ops, submit, shown } = scripted();
    const c = new Coalescer(submit, 4);
    for (const [o, s] of [
      [0, 'a'],
      [1, 'bb'],
      [3, 'cc'],
      [5, 'd'],
      [6, 'eeeee'],
    ] as const)
      void c.write('x', o, b(s));
    ops[0]!.commit();
    await tick();
    expect(shown()).toEqual(['x@0:a', 'x@1:bbcc', 'x@5:d', 'x@6:eeeee']);
  });

  it('a failed op rejects every write it carried; the queue behind a failed op still goes out', async () => {
    const { ops, submit, shown } = scripted();
    const c = new Coalescer(submit);
    const first = c.write('x', 0, b('a'));
    const q1 = c.write('x', 1, b('b'));
    const q2 = c.write('x', 2, b('c'));
    ops[0]!.fail(new Error('EIO first'));
    await expect(first).rejects.toThrow('EIO first');
    await tick();
    expect(shown()).toEqual(['x@0:a', 'x@1:bc']);
    ops[1]!.fail(new Error('ENOSPC run'));
    await expect(q1).rejects.toThrow('ENOSPC run');
    await expect(q2).rejects.toThrow('ENOSPC run');
    // The object is idle again: the next write goes out at once.
    void c.write('x', 3, b('d'));
    expect(shown()).toEqual(['x@0:a', 'x@1:bc', 'x@3:d']);
  });

  it('a submit that throws: at once, the caller sees it and nothing is counted; later, the queued writes reject', async () => {
    let throwing = true;
    const pending: Array<() => void> = [];
    const c = new Coalescer((_n, _o, data) => {
      if (throwing && data.byteLength === 1) throw new Error('ECLOSED');
      return new Promise<void>((r) => pending.push(r));
    });
    expect(() => c.write('x', 0, b('a'))).toThrow('ECLOSED');
    void c.write('x', 0, b('aa')); // submitted: the object was not left "in flight" by the throw
    expect(pending.length).toBe(1);
    const queued = c.write('x', 2, b('b'));
    pending[0]!();
    await expect(queued).rejects.toThrow('ECLOSED');
    throwing = false;
  });
});
