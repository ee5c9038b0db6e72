import { lockVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Lock extends VlmcCommand {
  static override summary = 'Lock a volume for this host.';

  static override description =
    `Takes the volume lock without opening the volume, independently of the rest of the \
system. Locking again from the same host succeeds; when another host holds the lock, fails with ELOCKED naming it \
(the command does not wait).`;

  static override examples = ['<%= config.bin %> <%= command.id %> vol1'];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to lock.' }),
  };

  async run(): Promise<{ name: string; owner: string }> {
    const { args } = await this.parse(Lock);
    const r = await lockVolume(this.session(), args.name);
    this.say(`locked ${r.name} (owner ${r.owner})`);
    return r;
  }
}
