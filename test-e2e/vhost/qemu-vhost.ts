/** qemu arguments for the vhost tests: bootGuest's NBD disk swapped for a vhost-user-blk one. */
import { type SpawnOptions, spawn } from 'node:child_process';

/**
 * A `BootOptions.spawn` that runs bootGuest's qemu with the disk as `vhost-user-blk-pci` on
 * `socket` (`queues` queues, qemu reconnecting every second) instead of its `-blockdev` NBD disk,
 * guest RAM (`memMiB`: bootGuest's `memoryMiB`) in a shared memfd as vhost-user needs. With
 * `keepNbd`, the NBD disk stays (the guest's first virtio disk) and the vhost-user one comes after it.
 */
export function vhostSpawn(socket: string, queues: number, memMiB: number, keepNbd = false) {
  const vhostDisk = [
    '-chardev',
    `socket,id=vhost0,path=${socket},reconnect=1`,
    '-device',
    `vhost-user-blk-pci,chardev=vhost0,num-queues=${queues}`,
  ];
  return (cmd: string, args: string[], o: SpawnOptions) => {
    const out: string[] = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i]!;
      if (keepNbd) {
        if (a === '-device' && args[i + 1]?.startsWith('virtio-blk-pci')) {
          out.push(a, args[++i]!, ...vhostDisk);
          continue;
        }
      } else if (a === '-blockdev') {
        i++; // the NBD disk: replaced below
        continue;
      }
      if (a === '-device' && args[i + 1]?.startsWith('virtio-blk-pci')) {
        i++;
        out.push(...vhostDisk);
        continue;
      }
      if (a === '-machine') {
        out.push(a, `${args[++i]},memory-backend=mem`);
        continue;
      }
      out.push(a);
    }
    out.push('-object', `memory-backend-memfd,id=mem,size=${memMiB}M,share=on`);
    return spawn(cmd, out, o);
  };
}
