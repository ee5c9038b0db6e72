/**
 * libnbd clients across a kill -9 + `vlmc map` of the endpoint. libnbd itself (1.14, Debian 12:
 * nbdsh, nbdcopy, the python module) never reconnects: a handle whose server went away is dead and
 * every later call fails ("invalid state: CLOSED"). What reconnects for them is nbdkit's retry
 * filter in front of its nbd plugin (which talks to the endpoint through libnbd): on an error it
 * reopens the plugin, that is connects to the endpoint again, and retries the request. So the
 * clients here connect to `nbdkit --filter=retry nbd socket=<endpoint>`:
 * - nbd-writer.py (python libnbd, 4 connections) writes slots while the endpoint is killed and
 *   mapped again: no write fails, every acknowledged write reads back;
 * - nbdcopy copies a random image in (rate-limited so that the kill lands mid-copy): it exits 0
 *   and the volume holds the image.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ENV, requireTool, sh } from '../lib/vlmc.js';
import { killAndRemap, type Mode, makeTarget, mapOk, type Restart, sleep, type Target } from './helpers.js';

const VOLUME = 'lvol';
const WRITER = join(import.meta.dirname, '../daemons/nbd-writer.py');
const SLOTS = 128;
const SLOT = 64 * 1024;

let t: Target | undefined;
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  await t?.dispose();
  t = undefined;
});

/** nbdkit serving the endpoint at `endpoint` through the retry filter (1 s between tries). */
async function nbdkitRetry(dir: string, endpoint: string, extra: string[] = []): Promise<string> {
  const sock = join(dir, 'nbdkit.sock');
  const child = spawn(
    'nbdkit',
    [
      '-f',
      '-U',
      sock,
      '--filter=retry',
      ...extra.filter((a) => a.startsWith('--filter')),
      'nbd',
      `socket=${endpoint}`,
      `export=${VOLUME}`,
      'retries=30',
      'retry-delay=1',
      'retry-exponential=no',
      ...extra.filter((a) => !a.startsWith('--filter')),
    ],
    { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.push(child);
  for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(25);
  if (!existsSync(sock)) throw new Error('nbdkit did not start');
  return sock;
}

/** The volume's content, read through a fresh connection to the endpoint. */
async function dump(uri: string, file: string): Promise<Buffer> {
  const r = await sh('/usr/bin/nbdcopy', [uri, file]);
  if (r.code !== 0) throw new Error(`nbdcopy ${r.code}: ${r.stderr}`);
  return readFileSync(file);
}

describe.each(['embedded', 'daemons'] as Mode[])(
  'libnbd clients through nbdkit --filter=retry (%s wiring)',
  (mode) => {
    it('python libnbd writers see no error across kill -9 + vlmc map; every ack reads back', {
      timeout: 120_000,
    }, async () => {
      requireTool('nbdsh', 'libnbd-bin + python3-libnbd');
      requireTool('nbdkit', 'nbdkit');
      t = await makeTarget(mode);
      const target = t;
      expect((await target.vlmc('create', VOLUME, '--size', '16M')).code).toBe(0);
      const first = await mapOk(target, VOLUME);
      const sock = await nbdkitRetry(target.dir, first.socket as string);

      const last = new Map<number, number>();
      const ackTimes: number[] = [];
      const errors: string[] = [];
      let done = false;
      let buf = '';
      const writer = spawn('/usr/bin/python3', [WRITER, sock, '', String(SLOTS), String(SLOT)], {
        env: ENV,
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push(writer);
      writer.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const [kind, a, b, ...rest] = buf.slice(0, nl).split(' ');
          buf = buf.slice(nl + 1);
          if (kind === 'ack') {
            last.set(Number(a), Number(b));
            ackTimes.push(Date.now());
          } else if (kind === 'err') errors.push(`${a} ${b} ${rest.join(' ')}`);
          else if (kind === 'done') done = true;
        }
      });
      const until = async (cond: () => boolean, ms: number, what: string) => {
        const end = Date.now() + ms;
        while (!cond()) {
          if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
          await sleep(10);
        }
      };
      await until(() => ackTimes.length > 100, 20_000, 'writes before the kill');
      const r: Restart = await killAndRemap(target, VOLUME, first.pid);
      const acksAtRemap = ackTimes.length;
      await until(() => ackTimes.length > acksAtRemap + 200, 30_000, 'writes after the restart');
      writer.stdin?.end();
      await until(() => done, 30_000, 'the writer to finish');
      expect(errors).toEqual([]);

      const data = await dump(r.entry.uri, join(target.dir, 'dump.bin'));
      for (const [slot, seq] of last) {
        const got = data.subarray(slot * SLOT, (slot + 1) * SLOT);
        expect([got.readUInt32LE(0), got.readUInt32LE(4)], `slot ${slot}`).toEqual([slot, seq]);
        expect(got.equals(Buffer.alloc(SLOT, got.subarray(0, 8))), `slot ${slot} is whole`).toBe(true);
      }
      let gap = 0;
      for (let i = 1; i < ackTimes.length; i++)
        gap = Math.max(gap, (ackTimes[i] as number) - (ackTimes[i - 1] as number));
      console.log(
        `endpoint restart (${mode}), python libnbd x4 through nbdkit retry (retry-delay=1): ${ackTimes.length} writes, ` +
          `0 errors, ${last.size} slots read back; endpoint down ${r.downMs} ms; client stall: longest gap between ` +
          `acks ${gap} ms`,
      );
      expect((await target.vlmc('unmap', VOLUME)).code).toBe(0);
    });
  },
);

describe('nbdcopy through nbdkit --filter=retry', () => {
  it('copies an image in across kill -9 + vlmc map of the endpoint, exit 0, the volume holds it', {
    timeout: 120_000,
  }, async () => {
    requireTool('nbdcopy', 'libnbd-bin');
    requireTool('nbdkit', 'nbdkit');
    t = await makeTarget('embedded');
    const target = t;
    expect((await target.vlmc('create', VOLUME, '--size', '48M')).code).toBe(0);
    const first = await mapOk(target, VOLUME);
    // 48 Mbit/s for the whole server: the copy takes ~6 s (the first 2 s burst faster).
    const sock = await nbdkitRetry(target.dir, first.socket as string, ['--filter=rate', 'rate=48M']);
    const image = randomBytes(48 << 20);
    const src = join(target.dir, 'src.img');
    writeFileSync(src, image);

    const began = Date.now();
    const copy = sh('/usr/bin/nbdcopy', ['--flush', src, `nbd+unix:///?socket=${sock}`]);
    await sleep(2500);
    const r = await killAndRemap(target, VOLUME, first.pid);
    const copied = await copy;
    const took = Date.now() - began;
    expect(copied.code, copied.stderr).toBe(0);
    expect(took, 'the kill landed mid-copy').toBeGreaterThan(r.killAt - began + r.downMs);
    expect((await dump(r.entry.uri, join(target.dir, 'dump.bin'))).equals(image)).toBe(true);
    console.log(
      `endpoint restart (embedded), nbdcopy 48 MiB through nbdkit retry: exit 0, image intact; killed ` +
        `${r.killAt - began} ms into the copy, endpoint down ${r.downMs} ms, copy took ${took} ms`,
    );
    expect((await target.vlmc('unmap', VOLUME)).code).toBe(0);
  });
});
