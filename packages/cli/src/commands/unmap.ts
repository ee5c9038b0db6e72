import { ArchipelagoError } from '@archipelago/libxseg';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { callControl } from '../endpoint/control.js';
import { detachDevice } from '../endpoint/kernel.js';
import { pidAlive } from '../endpoint/runstate.js';

const EXIT_WAIT_MS = 30_000;

export default class Unmap extends VlmcCommand {
  static override summary = 'Unmap a volume: stop its NBD endpoint, close it and release its lock.';

  static override description =
    `Accepts the volume name, its NBD URI, or its kernel device. In-flight I/O is drained before \
the volume is closed. A stale mapping (its process died) is cleaned up: the entry is removed and \
this host's lock on the volume is released.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> /dev/nbd0',
    "<%= config.bin %> <%= command.id %> 'nbd+unix:///vol1?socket=/run/archipelago/vol1.sock'",
  ];

  static override args = {
    target: Args.string({ required: true, description: 'Volume name, NBD URI or device.' }),
  };

  async run(): Promise<{ volume: string; stale: boolean }> {
    const { args } = await this.parse(Unmap);
    const state = this.runState();
    const entry = await state.find(args.target);
    if (!entry) {
      throw new ArchipelagoError(
        'ENOENT_VOLUME',
        `"${args.target}" is not mapped on this host (see "vlmc showmapped")`,
      );
    }
    if (entry.device) await detachDevice(entry.device);
    if (!entry.alive) {
      await state.remove(entry.volume);
      const rt = await this.runtime();
      if ((await rt.blockerm.lockOwner(entry.volume)) === rt.identity) await rt.mapper.unlock(entry.volume);
      this.say(`removed stale mapping of ${entry.volume} (pid ${entry.pid} was gone)`);
      return { volume: entry.volume, stale: true };
    }
    await callControl(entry.control, { op: 'unmap' });
    const deadline = Date.now() + EXIT_WAIT_MS;
    while (pidAlive(entry.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (pidAlive(entry.pid)) {
      throw new ArchipelagoError(
        'ETIMEDOUT',
        `the endpoint of "${entry.volume}" (pid ${entry.pid}) did not exit in ${EXIT_WAIT_MS / 1000} s`,
      );
    }
    this.say(`unmapped ${entry.volume}`);
    return { volume: entry.volume, stale: false };
  }
}
