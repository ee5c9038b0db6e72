import { type UnlockResult, unlockVolume } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Unlock extends VlmcCommand {
  static override summary = 'Unlock a volume; -f breaks a lock another holder has, after fencing it.';

  static override description =
    `Only the lock's owner may unlock it. -f breaks another holder's lock, but first makes sure \
that holder can no longer write: on RADOS its client is blocklisted; on a shared file system the \
lock is taken from it and -f waits until the holder's lease has run out (a live holder notices at \
its next renewal and stops writing). -f refuses when the holder is a live process of this host: \
unmap or close the volume instead. A holder that crashed needs no -f: the next writer takes its \
lock over once its process is gone (this host) or its lease has run out (another host).`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    {
      description: 'Break the stale lock of a dead node',
      command: '<%= config.bin %> <%= command.id %> -f vol1',
    },
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to unlock.' }),
  };

  static override flags = {
    force: Flags.boolean({
      char: 'f',
      summary: 'Break the lock even when another host holds it.',
      default: false,
    }),
  };

  async run(): Promise<UnlockResult> {
    const { args, flags } = await this.parse(Unlock);
    const r = await unlockVolume(this.session(), args.name, {
      force: flags.force,
      onWait: (what, ms) => {
        if (!this.jsonEnabled()) process.stderr.write(`waiting ${(ms / 1000).toFixed(1)} s for ${what}\n`);
      },
    });
    if (r.broke) {
      const who =
        r.broke.pid === null ? r.broke.holder : `${r.broke.holder} (pid ${r.broke.pid} on ${r.broke.host})`;
      this.say(`fenced ${who}: ${r.broke.fenced}; broke the lock of ${r.name}`);
    } else this.say(`unlocked ${r.name}`);
    return r;
  }
}
