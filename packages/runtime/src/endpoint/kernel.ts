/** The kernel path: attaching a mapped volume to /dev/nbdX through nbd-client. */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { MappedEntry } from './runstate.js';

const run = promisify(execFile);

/** True when the nbd module is loaded and the device node exists. */
export function nbdModuleAvailable(device: string): boolean {
  return existsSync('/sys/module/nbd') && existsSync(device) && existsSync(`/sys/block/${basename(device)}`);
}

/** Attaches `device` to a mapped volume with nbd-client (new-style, by export name). */
export async function attachDevice(entry: MappedEntry, device: string): Promise<void> {
  const args = entry.socket
    ? ['-unix', entry.socket, device, '-N', entry.volume]
    : ['127.0.0.1', String(entry.port), device, '-N', entry.volume];
  try {
    await run('nbd-client', args, { timeout: 30_000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    const why =
      err.code === 'ENOENT'
        ? 'nbd-client is not installed (Debian package nbd-client)'
        : (err.stderr ?? err.message).trim();
    throw new ArchipelagoError('EIO', `cannot attach ${device}: ${why}`, { cause: e, details: { device } });
  }
}

/** Detaches a kernel device (nbd-client -d). */
export async function detachDevice(device: string): Promise<void> {
  try {
    await run('nbd-client', ['-d', device], { timeout: 30_000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    throw new ArchipelagoError('EIO', `cannot detach ${device}: ${(err.stderr ?? err.message).trim()}`, {
      cause: e,
    });
  }
}
