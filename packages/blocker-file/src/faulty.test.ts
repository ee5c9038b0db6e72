/**
 * FaultyBlocker (from @archipelago/blocker) over a real FileBlocker: the planned call fails with
 * EIO and nothing else changes. It lives here because the blocker package cannot depend on an
 * implementation.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FaultyBlocker } from '@archipelago/blocker';
import { collect, expectCode } from '@archipelago/blocker/test';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FileBlocker } from './index.js';
import { walk } from './test-util.js';

const root = mkdtempSync(join(tmpdir(), 'archip-faulty-'));
let n = 0;
let open: FaultyBlocker[] = [];

function faulty(): { f: FaultyBlocker; dir: string } {
  const dir = join(root, `s${++n}`);
  const f = new FaultyBlocker(new FileBlocker({ dir, identity: 'faulty_1' }));
  open.push(f);
  return { f, dir };
}

afterEach(async () => {
  await Promise.all(open.map((f) => f.close()));
  open = [];
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('FaultyBlocker over FileBlocker', () => {
  it('fails the planned write with EIO, writes nothing, and lets everything else through', async () => {
    const { f, dir } = faulty();
    await f.write('good', 0, Buffer.from('fine'));
    const before = walk(dir);
    f.fail({ method: 'write', match: /^bad/, times: 1 });
    const e = await expectCode(f.write('bad1', 0, Buffer.from('lost')), 'EIO');
    expect(e.message).toMatch(/injected/);
    expect(walk(dir)).toEqual(before);
    expect(await f.exists('bad1')).toBe(false);
    // Other names, other methods, and the same call once the plan is spent all work.
    await f.write('good', 4, Buffer.from('!'));
    await f.writeFull('bad2', Buffer.from('ok'));
    await f.write('bad1', 0, Buffer.from('now'));
    expect((await f.read('bad1', 0, 3)).toString()).toBe('now');
    expect((await f.read('good', 0, 5)).toString()).toBe('fine!');
    expect(f.injected).toEqual(['write bad1']);
    expect((await collect(f.list())).sort()).toEqual(['bad1', 'bad2', 'good']);
  });

  it('lets `after` calls through, fails `times` calls, and can be disarmed', async () => {
    const { f } = faulty();
    await f.write('obj', 0, Buffer.from('abc'));
    const disarm = f.fail({ method: 'read', after: 2, times: 2 });
    await f.read('obj', 0, 3);
    await f.read('obj', 0, 3);
    await expectCode(f.read('obj', 0, 3), 'EIO');
    await expectCode(f.read('obj', 0, 3, { missingOk: true }), 'EIO');
    expect((await f.read('obj', 0, 3)).toString()).toBe('abc');
    f.fail({ method: 'read' });
    await expectCode(f.read('obj', 0, 3), 'EIO');
    disarm();
    f.clear();
    expect((await f.read('obj', 0, 3)).toString()).toBe('abc');
    expect(f.injected).toEqual(['read obj', 'read obj', 'read obj']);
  });

  it('injects a custom error, e.g. ENOSPC on copy, leaving the destination untouched', async () => {
    const { f } = faulty();
    await f.write('src', 0, Buffer.from('new'));
    await f.write('dst', 0, Buffer.from('old'));
    f.fail({
      method: 'copy',
      match: /^dst$/,
      error: () => new ArchipelagoError('ENOSPC', 'disk full (injected)'),
    });
    await expectCode(f.copy('src', 'dst'), 'ENOSPC');
    expect((await f.read('dst', 0, 3)).toString()).toBe('old');
  });

  it('fails a planned acquire without taking the lock, and a planned release without dropping it', async () => {
    const { f } = faulty();
    f.fail({ method: 'acquire', times: 1 });
    await expectCode(f.acquire('vol'), 'EIO');
    expect(await f.lockOwner('vol')).toBeNull();
    await f.acquire('vol');
    f.fail({ method: 'release', times: 1 });
    await expectCode(f.release('vol'), 'EIO');
    expect(await f.lockOwner('vol')).toBe('faulty_1');
    await f.release('vol');
    expect(await f.lockOwner('vol')).toBeNull();
  });

  it('fails a planned delete and keeps the object', async () => {
    const { f } = faulty();
    await f.write('obj', 0, Buffer.from('x'));
    f.fail({ method: 'delete', times: 1 });
    await expectCode(f.delete('obj'), 'EIO');
    expect(await f.exists('obj')).toBe(true);
    expect(await f.delete('obj')).toBe(true);
    expect(f.kind).toBe('faulty(file)');
    expect(f.identity).toBe('faulty_1');
  });
});
