/**
 * The blocker peer and write-back blockers: a WRITE flagged XF_FUA reaches the blocker as a
 * durable write, so a write-back blocker (a rados_blocker peer with `sync: 'flush'`) does not
 * answer it before it is durable.
 */
import type { WriteOptions } from '@archipelago/blocker';
import { MemoryBlocker, MemoryStore } from '@archipelago/blocker/test';
import { Op, XF } from '@archipelago/libxseg';
import type { XsegRequest } from '@archipelago/libxseg/segment';
import { expect, it } from 'vitest';
import { createBlockerService } from './servers/blocker-peer.js';

/** A MemoryBlocker that records the options of every write. */
class Recording extends MemoryBlocker {
  readonly seen: Array<WriteOptions | undefined> = [];
  override async write(
    name: string,
    offset: number,
    data: Uint8Array,
    options?: WriteOptions,
  ): Promise<void> {
    this.seen.push(options);
    await super.write(name, offset, data);
  }
}

it('passes XF_FUA of a WRITE on as a durable write, and only then', async () => {
  const main = new Recording({ store: new MemoryStore() });
  const service = createBlockerService(main, () => main);
  const req = (flags: number): XsegRequest => ({
    handle: 1,
    op: Op.WRITE,
    flags,
    offset: 0,
    size: 3,
    src: 0,
    dst: 0,
    target: 'obj',
    data: Buffer.from('abc'),
  });
  await service.serve(req(XF.FUA));
  await service.serve(req(0));
  await service.serve(req(XF.FLUSH));
  expect(main.seen.map((o) => o?.durable)).toEqual([true, false, false]);
  expect((await main.read('obj', 0, 3)).toString()).toBe('abc');
  await service.close();
});
